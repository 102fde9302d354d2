"""Experiment configs: ``get_config(variant)`` per experiment, built on
:func:`adacode_jax.configs._base.base_config`. Chosen by ``--config NAME[:VARIANT]`` (or a path to
a config file); ``adacode-train --help`` lists them, ``--describe`` prints every field."""
