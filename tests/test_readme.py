"""Every command the README, docs/ and launch/ name exists: each ``python -m adacode_jax...``
module is a front end with a ``__main__`` block, each ``adacode-*`` command a console script, and
each ``--config`` file a packaged config. (That the commands *work* is tested module by module.)"""
import ast
import configparser
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ([os.path.join(REPO, "README.md"), os.path.join(REPO, "Makefile")]
        + glob.glob(os.path.join(REPO, "docs", "*.md")) + glob.glob(os.path.join(REPO, "launch", "*"))
        + glob.glob(os.path.join(REPO, "adacode_jax", "pretrained", "*.md")))


def _text() -> dict[str, str]:
    return {os.path.relpath(p, REPO): open(p, encoding="utf-8").read()
            for p in DOCS if os.path.isfile(p)}


def _has_main_block(path: str) -> bool:
    tree = ast.parse(open(path, encoding="utf-8").read())
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def _module_file(module: str) -> str | None:
    base = os.path.join(REPO, *module.split("."))
    for p in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(p):
            return p
    return None


def test_every_python_m_module_named_in_the_docs_is_a_front_end():
    bad = []
    for name, text in _text().items():
        for module in sorted(set(re.findall(r"-m (adacode_jax(?:\.\w+)+)", text))):
            path = _module_file(module)
            if path is None or not _has_main_block(path):
                bad.append(f"{name}: python -m {module}")
    assert not bad, "commands that do not exist:\n" + "\n".join(bad)


def test_every_console_script_named_in_the_docs_is_installed():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    scripts = {line.split("=")[0].strip()
               for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()}
    assert {"adacode-train", "adacode-restore"} <= scripts
    bad = [f"{name}: {cmd}" for name, text in _text().items()
           for cmd in sorted(set(re.findall(r"(?<![\w/.-])(adacode-[a-z]+(?:-[a-z]+)*)(?= )", text)))
           if cmd not in scripts and cmd != "adacode-jax"]
    assert not bad, "console scripts that setup.cfg does not install:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(_text()))
def test_every_config_file_named_in_the_docs_exists(name):
    text = _text()[name]
    missing = [c for c in sorted(set(re.findall(r"configs/(\w+\.py)", text)))
               if not os.path.isfile(os.path.join(REPO, "adacode_jax", "configs", c))]
    assert not missing, f"{name} names configs that do not exist: {missing}"


def test_every_python_m_module_the_tests_run_is_a_front_end():
    """A test that runs a library module with ``-m`` would pass only by accident."""
    bad = []
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "*.py"))):
        text = open(path, encoding="utf-8").read()
        for module in sorted(set(re.findall(r'"-m", "(adacode_jax(?:\.\w+)+)"', text))):
            target = _module_file(module)
            if target is None or not _has_main_block(target):
                bad.append(f"{os.path.basename(path)}: python -m {module}")
    # test_cli checks on purpose that a 0.1.0 shim is gone
    assert bad == ["test_cli.py: python -m adacode_jax.inference.restorer"], bad
