"""One error style for every command, help with defaults and examples, and a package whose
library never imports its command-line front ends (no import cycles)."""
from __future__ import annotations

import ast
import functools
import errno
import os
import subprocess
import sys

import pytest

from adacode_jax import errors
from adacode_jax.cli import common

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "adacode_jax")
# Commands in adacode_jax/cli with an argparse parser (module name -> program name).
PARSERS = {"restore": "adacode-restore", "evaluate": "adacode-evaluate", "convert": "adacode-convert",
           "export": "adacode-export", "make_testset": "adacode-make-testset",
           "split_by_class": "python -m adacode_jax.cli.split_by_class", "demo": "adacode-demo"}


def _raiser(exc):
    def main(argv):
        raise exc
    return main


def test_user_error_is_one_line_with_exit_2(capsys):
    rc = common.run(_raiser(errors.UserError("a.png: 3 NaN pixels", "re-export the image")), [])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "error: a.png: 3 NaN pixels; re-export the image\n"


def test_partial_failure_exits_1(capsys):
    assert common.run(_raiser(errors.PartialFailure("2 of 5 files failed")), []) == 1
    assert capsys.readouterr().err == "error: 2 of 5 files failed\n"


def test_os_errors_name_the_file_and_the_fix(capsys):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/ckpt/step_5/params")
    assert common.run(_raiser(full), []) == 1
    assert capsys.readouterr().err == (f"error: /ckpt/step_5/params: {os.strerror(errno.ENOSPC)}; "
                                       "free disk space or choose another output folder\n")
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/x.png")
    common.run(_raiser(denied), [])
    assert "check the permissions" in capsys.readouterr().err


def test_internal_error_has_no_traceback_unless_debug(capsys, monkeypatch):
    monkeypatch.delenv(common.DEBUG_ENV, raising=False)
    assert common.run(_raiser(KeyError("boom")), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (KeyError: 'boom'); rerun with --debug")
    assert "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(KeyError):
        common.run(_raiser(KeyError("boom")), ["--debug"])
    monkeypatch.setenv(common.DEBUG_ENV, "1")
    with pytest.raises(errors.UserError):
        common.run(_raiser(errors.UserError("x")), [])


def test_usage_errors_are_one_line(capsys):
    from adacode_jax.cli import restore
    with pytest.raises(SystemExit) as e:
        restore.build_parser().parse_args(["-i", "x.png", "-o", "out", "--tile", "-3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == ("error: argument --tile: --tile must be >= 0; see adacode-restore --help\n")
    assert restore.main(["-i", "x.png", "-o", "o", "--outscale", "0"]) == 2
    assert "--outscale must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_every_option_has_help_with_its_default_and_examples(module):
    mod = __import__(f"adacode_jax.cli.{module}", fromlist=["build_parser"])
    parser = mod.build_parser()
    assert parser.prog == PARSERS[module]
    text = parser.format_help()
    assert "Examples:" in text and "--debug" in text
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{module}: {action.option_strings} has no help"
    # defaults are shown (argparse's ArgumentDefaultsHelpFormatter)
    assert "(default:" in text


@pytest.mark.parametrize("module", ["report", "compare", "comm_report", "model_sizes", "data_bench",
                                    "corpus", "device_check"])
def test_research_tools_are_front_ends_in_cli(module, capsys):
    """The tools' argparse front ends live in adacode_jax/cli/ with the others' conventions:
    ``main(argv)`` returns the exit code (0 for --help, 2 for a usage error, one line)."""
    mod = __import__(f"adacode_jax.cli.{module}", fromlist=["build_parser"])
    assert mod.build_parser().prog == f"python -m adacode_jax.cli.{module}"
    assert mod.main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out
    assert mod.main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_restore_help_lists_the_new_options():
    from adacode_jax.cli import restore
    text = restore.build_parser().format_help()
    for option in ("--outscale", "--device", "--checkpoint", "--save-weight-maps"):
        assert option in text


def test_unknown_device_is_refused_by_name():
    from adacode_jax.cli import restore
    with pytest.raises(errors.UserError, match=r"--device tpu: no tpu device on this machine \(have: cpu\)"):
        restore.device_context("tpu")
    with pytest.raises(errors.UserError, match="only 8 cpu device"):
        restore.device_context("cpu:9")
    restore.device_context("cpu:1")   # the 8 fake CPU devices of tests/conftest.py


def _imports(path: str, module: str) -> set[str]:
    """adacode_jax modules imported anywhere in a file (also inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("adacode_jax")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("adacode_jax"):
                for a in node.names:
                    found.add(f"{base}.{a.name}")
                found.add(base)
    return found


@functools.lru_cache(maxsize=None)
def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def test_library_never_imports_the_command_line_front_ends():
    graph = _module_graph()
    offenders = sorted(f"{m} -> {d}" for m, deps in graph.items()
                       if not m.startswith("adacode_jax.cli")
                       and m != "adacode_jax.main"
                       for d in deps if d.startswith("adacode_jax.cli"))
    # `if __name__ == "__main__"` shims (python -m adacode_jax.cli.restore) are the exception:
    shims = {o for o in offenders
             if "__main__" in open(_path(o.split(" -> ")[0]), encoding="utf-8").read()}
    assert sorted(set(offenders) - shims) == []
    for o in shims:    # ... and only inside that block
        src = open(_path(o.split(" -> ")[0]), encoding="utf-8").read()
        head = src.split('if __name__ == "__main__":')[0]
        assert "from adacode_jax.cli" not in head and "import adacode_jax.cli" not in head, o


def _path(module: str) -> str:
    rel = module.replace(".", os.sep)
    base = os.path.dirname(PACKAGE)
    full = os.path.join(base, rel + ".py")
    return full if os.path.exists(full) else os.path.join(base, rel, "__init__.py")


def test_no_import_cycles_at_module_level():
    """Module-level imports (what runs at import time) form no cycle."""
    graph, modules = {}, _module_graph()
    for name in modules:
        tree = ast.parse(open(_path(name), encoding="utf-8").read())
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                         type_ignores=[])
        deps = set()
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adacode_jax"):
                deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {d for d in deps if d in modules and d != name}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 1
        for d in graph.get(n, ()):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2
    for n in graph:
        if n not in state:
            visit(n, [n])
    # A package importing its own submodules (adacode_jax.models -> .adacode) is not a cycle.
    cycles = [c for c in cycles if not all(c[0].startswith(x) or x.startswith(c[0]) for x in c)]
    assert cycles == []


def test_restore_and_batch_restore_do_not_import_each_other():
    graph = _module_graph()
    assert "adacode_jax.inference.batch" not in graph["adacode_jax.inference.restorer"]


def test_python_dash_m_runs_the_front_end_and_the_library_module_is_no_command():
    out = subprocess.run([sys.executable, "-m", "adacode_jax.cli.restore", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "adacode-restore" in out.stdout and "Examples:" in out.stdout
    # the 0.1.0 shims are gone (CHANGELOG.md): the library module runs nothing and says nothing
    out = subprocess.run([sys.executable, "-m", "adacode_jax.inference.restorer", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == ""
