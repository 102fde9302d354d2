"""Command-line front ends. The library (models, data, training, inference) lives in the
modules above this package and never imports from it; each module here parses arguments,
calls the library and turns its errors into one line (:mod:`adacode_jax.cli.common`)."""
