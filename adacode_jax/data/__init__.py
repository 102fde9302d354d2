"""Input pipelines: image sources -> crops -> BSRGAN degradation or masks -> sharded batches.

Modules, in the order data flows through them:

- :mod:`~adacode_jax.images`: robust image reading (grey, RGBA, 16-bit, EXIF) and PNG writing;
- :mod:`~adacode_jax.data.sources`: folders, list files, paired GT/LR folders, TFDS;
- :mod:`~adacode_jax.data.transforms`: random resize, crop, flips
  (docs/official.md#data-transforms);
- :mod:`~adacode_jax.data.kernels`, :mod:`~adacode_jax.data.imresize`,
  :mod:`~adacode_jax.data.degradations`: the BSRGAN degradation for current NumPy/SciPy;
- :mod:`~adacode_jax.data.masks`: brush-stroke inpainting masks;
- :mod:`~adacode_jax.data.examples`: one record -> one training example (a Grain RandomMap);
- :mod:`~adacode_jax.data.pipeline`: ``default_data_config()``, ``make_iterator(config.data)``,
  ``make_global_batch``; :mod:`~adacode_jax.data.iterator_state`: resume exactly.

Tools: ``python -m adacode_jax.cli.make_testset`` (frozen evaluation sets),
``python -m adacode_jax.cli.split_by_class`` (stage I semantic subsets, with the ADE20K table
of :mod:`~adacode_jax.tools.ade20k`), ``python -m adacode_jax.cli.data_bench`` (throughput).
"""
