"""The project's error type for problems a user can fix.

``str(error)`` is one line in the style every command prints::

    <file or field>: <what is wrong>; <what to do>

Library code raises :class:`UserError` (or a subclass that also derives from the builtin it
used to be, e.g. ``ValueError``, so existing ``except`` clauses keep working); the command-line
front ends in :mod:`adacode_jax.cli` print it as ``error: <message>`` and exit with
:attr:`UserError.exit_code` without a traceback (``--debug`` shows one).
"""
from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A bad input, config, file or environment; the message names it and says what to do.

    Args:
      what: the problem, ideally starting with the file or field it concerns.
      fix: what to do about it; appended after ``"; "`` when given.
    """

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}" if fix else what)


class PartialFailure(UserError):
    """Some items of a batch failed, the others were done (exit code 1)."""

    exit_code = 1


# What to do about common operating-system errors, by errno.
_OS_FIXES = {
    errno.ENOSPC: "free disk space or choose another output folder",
    errno.EDQUOT: "free space within your disk quota or choose another output folder",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "the path is a folder; give a file",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def describe_os_error(e: OSError) -> str:
    """One line for an ``OSError``: ``<path>: <reason>; <what to do>``."""
    fix = _OS_FIXES.get(e.errno)
    if e.filename is None:         # raised with a message of ours, which names the file
        return (e.strerror or str(e) or type(e).__name__) + (f"; {fix}" if fix else "")
    where = os.fspath(e.filename)
    if e.filename2 is not None:
        where = f"{where} -> {os.fspath(e.filename2)}"
    reason = e.strerror or str(e)
    return f"{where}: {reason}" + (f"; {fix}" if fix else "")
