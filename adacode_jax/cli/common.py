"""What every command shares: one error style, ``--debug``, help with defaults and examples.

Errors print as one line, ``error: <file>: <what is wrong>; <what to do>``, with exit code 2
for usage and input errors and 1 for partial failures (some files failed, the rest were done)
and for internal errors. A traceback appears only with ``--debug`` or ``ADACODE_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from adacode_jax import errors

DEBUG_ENV = "ADACODE_DEBUG"


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default and keeps the description's and epilog's line breaks."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the project's conventions: defaults in ``--help``, an ``Examples:``
    epilog, a ``--debug`` flag, and usage errors as one ``error:`` line (exit 2)."""

    def __init__(self, *args, examples: Sequence[str] = (), **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if examples and "epilog" not in kwargs:
            kwargs["epilog"] = "Examples:\n" + "\n".join(f"  {e}" for e in examples)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show tracebacks (or set {DEBUG_ENV}=1)")

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def fail(message: str, code: int = 2) -> int:
    """Prints ``error: message`` to stderr and returns ``code`` (for ``return fail(...)``)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def output_folder_problem(path: str | None, flag: str = "-o/--output") -> str | None:
    """The one-line error for an output folder that cannot be one (an existing file, or below
    one), else None: checked before any work."""
    if not path:
        return None
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is an existing file" if probe == os.path.abspath(path) else f"is below the file {probe}"
        return f"{path}: {flag} must be a folder, and it {where}; choose another path"
    return None


def some_failed(lines: Sequence[str], *, total: int | None = None, any_written: bool = True) -> int:
    """A partial failure: ``error: N [of T] file(s) failed; the others were written:`` and one
    indented ``path: reason`` line per failed file, on stderr. Returns exit code 1."""
    of = f" of {total}" if total is not None else ""
    rest = "the others were written" if any_written else "nothing was written"
    print(f"error: {len(lines)}{of} file(s) failed; {rest}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    return 1


def run(main: Callable[[list[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs a command's ``main(argv)`` and turns exceptions into the one-line error style."""
    debug = debug_requested(argv)
    try:
        code = main(None if argv is None else list(argv))
        return 0 if code is None else int(code)
    except SystemExit as e:        # argparse: --help (0) and usage errors (2), already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else fail(str(e.code)))
    except errors.UserError as e:
        if debug:
            raise
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        return fail("interrupted", 130)
    except OSError as e:
        if debug:
            raise
        return fail(errors.describe_os_error(e), 1 if e.errno is not None else 2)
    except MemoryError:
        if debug:
            raise
        return fail("out of host memory; use smaller images, tiles (--tile) or batches", 1)
    except Exception as e:  # noqa: BLE001 - the last resort of a command line
        if debug:
            raise
        return fail(f"internal error ({type(e).__name__}: {e}); rerun with --debug for the "
                    "traceback and report it", 1)


def command(impl: Callable[[list[str] | None], int | None]) -> Callable[..., int]:
    """``main(argv=None) -> int`` for a command implemented by ``impl``: never raises for a
    user's mistake, returns the exit code (what tests and other Python callers use)."""
    def main(argv: Sequence[str] | None = None) -> int:
        return run(impl, argv)
    main.__doc__ = impl.__doc__
    return main


def entry(impl: Callable[[list[str] | None], int | None]) -> Callable[[], None]:
    """A console-script entry point: ``sys.exit(run(impl))``."""
    def console() -> None:
        sys.exit(run(impl))
    return console


def named_paths(items: list[str], parser: argparse.ArgumentParser, flag: str,
                value: str) -> dict[str, str]:
    """``{name: path}`` of repeated ``FLAG NAME=PATH`` items; a malformed one is a usage error
    (``--run 'x': expected NAME=WORKDIR``)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"{flag} {item!r}: expected NAME={value}")
        out[name] = path
    return out
