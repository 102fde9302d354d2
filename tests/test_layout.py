"""The package's layout, read from the source with ``ast`` (no module is imported): the library
never imports the command line, few modules sit at the top, modules and functions are short,
module-level imports form no cycle, and no source points outside the repository.

Each check is a function of the package folder, so a scratch script can run it on a made-up
tree; the tests run them on ``adacode_jax/``.
"""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "adacode_jax")
# The users' documented entry point (python -m adacode_jax.main) re-exports the training front end.
CLI_IMPORT_ALLOWED = ("main.py",)
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120
# Pointers that mean nothing to a reader of the repository alone.
FORBIDDEN_MENTIONS = ("../shared", "spec §")
TEXT_SUFFIXES = (".py", ".md", ".txt", ".json", ".cfg", ".toml", ".yaml", ".yml", ".sh", ".csv")


def source_files(package: str, suffixes: tuple[str, ...] = (".py",)) -> dict[str, str]:
    """``{path relative to the package's parent: absolute path}`` of the files under ``package``
    ending in ``suffixes``, without ``__pycache__``; symlinked folders are followed once."""
    found, seen = {}, set()
    for root, dirs, files in os.walk(package, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(suffixes):
                path = os.path.join(root, f)
                found[os.path.relpath(path, os.path.dirname(package))] = path
    return found


def module_name(rel: str) -> str:
    """``adacode_jax/cli/common.py`` -> ``adacode_jax.cli.common``; a package's ``__init__``
    is the package."""
    name = rel[:-3].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """What an import statement imports: ``import a.b`` gives ``a.b``; ``from a import b`` gives
    ``a.b`` where that is a module of ``known``, else ``a``."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom):
        base = _absolute(node, module, is_package)
        return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return set()


def _modules(package: str) -> dict[str, tuple[str, str]]:
    """``{module name: (relative path, absolute path)}`` of every ``.py`` file of ``package``."""
    return {module_name(rel): (rel, path) for rel, path in source_files(package).items()}


def _is_cli(name: str, package: str) -> bool:
    cli = f"{os.path.basename(package)}.cli"
    return name == cli or name.startswith(cli + ".")


def cli_imports(package: str) -> list[str]:
    """``file:line: imported`` for every import of ``<package>.cli`` (anywhere in a file, also
    inside functions, and ``importlib.import_module`` / ``__import__`` of a literal name) by a
    module outside ``<package>/cli/``, except :data:`CLI_IMPORT_ALLOWED`."""
    modules = _modules(package)
    known = set(modules)
    name = os.path.basename(package)
    allowed = {os.path.join(name, f) for f in CLI_IMPORT_ALLOWED}
    offenders = []
    for module, (rel, path) in sorted(modules.items()):
        if _is_cli(module, package) or rel in allowed:
            continue
        is_package = rel.endswith("__init__.py")
        for node in ast.walk(_parse(path)):
            names = imported_modules(node, module, is_package, known)
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) in
                    ("import_module", "__import__")):
                names = {node.args[0].value}
            offenders += [f"{rel}:{node.lineno}: {n}" for n in sorted(names) if _is_cli(n, package)]
    return offenders


def top_level_modules(package: str) -> list[str]:
    """The ``.py`` files directly in ``package`` (``__init__.py`` included)."""
    return sorted(f for f in os.listdir(package)
                  if f.endswith(".py") and os.path.isfile(os.path.join(package, f)))


def long_modules(package: str, limit: int = MAX_MODULE_LINES) -> list[str]:
    """``file: N lines`` for every module of more than ``limit`` lines."""
    out = []
    for rel, path in source_files(package).items():
        with open(path, encoding="utf-8") as f:
            n = len(f.read().splitlines())
        if n > limit:
            out.append(f"{rel}: {n} lines")
    return out


def long_functions(package: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line: name (N lines)`` for every function or method (nested ones too) of more
    than ``limit`` lines, from its ``def`` (decorators not counted) to its last line."""
    out = []
    for rel, path in source_files(package).items():
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{rel}:{node.lineno}: {node.name} ({n} lines)")
    return out


def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported: those of the module body
    and of its top-level ``if``/``try``/``with`` blocks, not ``if TYPE_CHECKING:`` ones and not
    those inside functions or classes."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [
                s for h in node.handlers for s in h.body]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            stack += node.body


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports at module level}``."""
    modules = _modules(package)
    known = set(modules)
    graph = {}
    for module, (rel, path) in modules.items():
        is_package = rel.endswith("__init__.py")
        deps = set()
        for node in _module_level_imports(_parse(path)):
            deps |= imported_modules(node, module, is_package, known)
        graph[module] = {d for d in deps if d in known and d != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b -> a`` for one cycle through each strongly connected group of modules."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(v):                       # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:              # a shortest way back to the group's first module
        start = min(group)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(d for d in graph[path[-1]] if d in group)
            if start in nxt:
                cycles.append(" -> ".join(path + [start]))
                break
            for d in nxt:
                if d not in seen:
                    seen.add(d)
                    paths.append(path + [d])
    return sorted(cycles)


def forbidden_mentions(folders: list[str], words: tuple[str, ...] = FORBIDDEN_MENTIONS) -> list[str]:
    """``file:line: word`` for every text source under ``folders`` that contains one of
    ``words`` (a folder reached twice through a symlink is read once)."""
    out, read = [], set()
    for folder in folders:
        for rel, path in source_files(folder, TEXT_SUFFIXES).items():
            if os.path.realpath(path) in read:
                continue
            read.add(os.path.realpath(path))
            with open(path, encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f, 1):
                    out += [f"{rel}:{i}: {w!r}" for w in words if w in line]
    return out


def test_the_library_never_imports_the_command_line():
    offenders = cli_imports(PACKAGE)
    assert not offenders, ("modules outside adacode_jax/cli/ that import adacode_jax.cli (move the "
                           "front end into cli/):\n  " + "\n  ".join(offenders))


def test_few_modules_sit_directly_in_the_package():
    top = top_level_modules(PACKAGE)
    assert len(top) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(top)} modules directly in adacode_jax/ (at most {MAX_TOP_LEVEL_MODULES}; move some "
        "into a subpackage): " + ", ".join(top))


def test_no_module_is_long():
    offenders = long_modules(PACKAGE)
    assert not offenders, (f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n  "
                           + "\n  ".join(offenders))


def test_no_function_is_long():
    offenders = long_functions(PACKAGE)
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (split them into named "
                           "helpers):\n  " + "\n  ".join(offenders))


def test_module_level_imports_form_no_cycle():
    cycles = import_cycles(import_graph(PACKAGE))
    assert not cycles, "module-level import cycles:\n  " + "\n  ".join(cycles)


def test_no_source_points_outside_the_repository():
    offenders = forbidden_mentions([PACKAGE, os.path.join(REPO, "configs")])
    assert not offenders, ("sources that point outside the repository (point to docs/official.md "
                           "instead):\n  " + "\n  ".join(offenders))
