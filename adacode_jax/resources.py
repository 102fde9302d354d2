"""Files shipped inside the package, and experiment configs by name.

The experiment configs (``adacode_jax/configs/*.py``), the embedded demo images and the
held-out evaluation set (``adacode_jax/assets``) and the shipped models
(``adacode_jax/pretrained``) are package data, so an installed wheel has them; a checkout's
top-level ``configs/`` and ``assets/`` are symlinks to the same folders.

``--config`` takes a config by name (``stage3_sr:x4,tiny``) or by path
(``configs/stage3_sr.py:x4``, ``/abs/my_config.py``). This module imports nothing heavy: the
training command's ``--help`` reads the configs' docstrings without importing JAX.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os

from adacode_jax import errors

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS_DIR = os.path.join(PACKAGE_DIR, "configs")
ASSETS_DIR = os.path.join(PACKAGE_DIR, "assets")
EMBEDDED_IMAGES = os.path.join(ASSETS_DIR, "images")
EVALSET = os.path.join(ASSETS_DIR, "evalset")
PRETRAINED_DIR = os.path.join(PACKAGE_DIR, "pretrained")


def config_names() -> list[str]:
    """The packaged experiment configs, e.g. ``['stage1_codebook', ..., 'stage3_sr']``."""
    return sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                  if f.endswith(".py") and not f.startswith("_"))


def split_spec(spec: str) -> tuple[str, str | None]:
    """``'stage3_sr:x4,tiny'`` -> ``('stage3_sr', 'x4,tiny')``; no ``:`` -> variant ``None``."""
    name, sep, variant = spec.partition(":")
    return name, (variant if sep else None)


def resolve_config(spec: str) -> str:
    """``NAME[:VARIANT]`` or ``PATH[:VARIANT]`` -> ``FILE[:VARIANT]`` with FILE an existing path.

    A bare name (no ``/``, no ``.py``) is a packaged config; anything else is a path, resolved
    as given (relative to the working directory), as ml_collections' config flags do.
    """
    name, variant = split_spec(spec)
    if os.path.sep in name or "/" in name or name.endswith(".py"):
        if not os.path.isfile(name):
            raise errors.UserError(f"{name}: no such config file",
                                   f"give an existing file or one of the packaged configs: "
                                   f"{', '.join(config_names())}")
        return spec
    if name not in config_names():
        raise errors.UserError(f"--config {spec}: no packaged config named {name!r}",
                               f"use one of {', '.join(config_names())} (adacode-train --help "
                               f"lists them) or a path to a config file")
    path = os.path.join(CONFIGS_DIR, f"{name}.py")
    return path if variant is None else f"{path}:{variant}"


def load_config(spec: str):
    """The ConfigDict of ``NAME[:VARIANT]`` or ``PATH[:VARIANT]`` (``get_config(VARIANT)``)."""
    path, variant = split_spec(resolve_config(spec))
    module_spec = importlib.util.spec_from_file_location(
        f"adacode_experiment_{os.path.splitext(os.path.basename(path))[0]}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


@dataclasses.dataclass(frozen=True)
class ConfigSummary:
    name: str        # e.g. 'stage3_sr'
    summary: str     # the docstring's first line: what it trains
    variants: str    # the module's VARIANTS line ('' if it has none)


def config_summaries(directory: str = CONFIGS_DIR) -> list[ConfigSummary]:
    """What each config trains and its variants, read from the source without importing it."""
    out = []
    for name in config_names() if directory == CONFIGS_DIR else sorted(
            f[:-3] for f in os.listdir(directory) if f.endswith(".py") and not f.startswith("_")):
        with open(os.path.join(directory, f"{name}.py"), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        doc = (ast.get_docstring(tree) or "").strip()
        # The first sentence(s) up to the first blank line, joined into one line.
        summary = " ".join(doc.split("\n\n")[0].split()) if doc else ""
        variants = ""
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "VARIANTS"):
                variants = ast.literal_eval(node.value)
        out.append(ConfigSummary(name, summary, variants))
    return out
