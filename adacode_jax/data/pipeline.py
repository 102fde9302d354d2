"""The Grain input pipeline: sources -> per-host shard -> shuffle/repeat/mix -> examples -> batches.

``make_iterator(config.data)`` returns a Grain iterator of host batches, dicts of numpy arrays
(B = global batch / number of hosts, S = crop_size, all images float32 NHWC in [0, 1]):

- ``gt``: (B, S, S, 3);
- ``lq``: (B, S/sf, S/sf, 3) for 'sr', (B, S, S, 3) masked image with white holes for 'inpaint';
- ``mask``: (B, S, S, 1), 1 = hole, for 'inpaint';
- ``skipped``: (B,) int32, how many unusable records (logged by path) were dropped just
  before each example; ``batch['skipped'].sum()`` is the per-batch bad-file metric.

Determinism: every random choice comes from Grain's per-record generator, seeded by
(``seed``, host, position in the stream). Bad records are dropped in the main process,
after the worker processes, so the batches are byte-identical for any ``worker_count``.
``it.get_state()`` / ``it.set_state()`` resume on exactly the next batch
(:mod:`adacode_jax.data.iterator_state`).

Multi-host: each host reads a disjoint, equal-sized share of every source
(``grain.sharding.ShardByJaxProcess(drop_remainder=True)`` by default), and
:func:`make_global_batch` assembles the host batches into global ``jax.Array``\\ s.
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from adacode_jax import errors
from adacode_jax.data import examples
from adacode_jax.data import sources as sources_lib

# Images of each source decoded before training starts (spread over its keys).
SOURCE_SAMPLE = 8


class UnusableSourceError(errors.UserError, ValueError):
    """A training source none of whose sampled images can be read (the message names it)."""


def check_source(src: sources_lib.Source, keys: list, index: int,
                 sample: int | None = None) -> int:
    """Decode up to ``sample`` (default :data:`SOURCE_SAMPLE`) of ``keys`` (evenly spread)
    before any work; refuse the source when none decodes, warn when some do not. Returns how
    many were unusable."""
    sample = SOURCE_SAMPLE if sample is None else sample
    picked = keys[:: max(1, len(keys) // max(sample, 1))][:sample]
    failures = []
    for key in picked:
        try:
            src.load(key)
        except Exception as e:  # pylint: disable=broad-except  (as MakeExample: any error is bad)
            what = str(getattr(e, "what", e))     # a UserError's fix is ours to give
            failures.append(what if src.describe(key) in what else f"{src.describe(key)}: {what}")
    if failures and len(failures) == len(picked):
        raise UnusableSourceError(
            f"data.sources[{index}]: none of {len(picked)} sampled images of its {len(keys)} "
            f"can be read (e.g. {failures[0]}); check the files or remove the source")
    if failures:
        logging.warning("data.sources[%d]: %d of %d sampled images are unusable and will be "
                        "skipped (e.g. %s)", index, len(failures), len(picked), failures[0])
    return len(failures)


# A run of this many unusable records in a row means the data is broken, not a few bad files.
MAX_CONSECUTIVE_BAD = 1000


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults of ``config.data``; experiment configs override what they need."""
    c = ml_collections.ConfigDict()
    # Image sources, mixed by weight. Each is a dict, see adacode_jax/data/sources.py:
    #   {'type': 'folder', 'path': DIR, 'list_file': None, 'weight': 1.0, 'resize_range': None}
    #   {'type': 'paired', 'path': GT_DIR, 'lq_path': LR_DIR, 'lq_suffix': '', ...}
    #   {'type': 'tfds', 'name': 'div2k/bicubic_x4', 'split': 'train', 'data_dir': None,
    #    'image_key': 'hr', 'lq_key': None, ...}
    # The paper's mix: DIV2K, Flickr2K, DIV8K, and FFHQ with resize_range=(0.5, 1.0).
    c.sources = []
    # 'recon' (stages I/II: GT crops only), 'sr' (stage III: (lq, gt) pairs), 'inpaint'.
    c.task = "recon"
    # SR factor, 2 or 4 (ignored unless task == 'sr').
    c.scale = 4
    # GT crop side (reference: 256). Must be a multiple of scale.
    c.crop_size = 256
    # Reference random resize before cropping: height -> randint(crop, H), bicubic.
    c.use_resize_crop = True
    # Horizontal flip with p = 0.5.
    c.use_flip = True
    # Vertical flip and transpose, each with p = 0.5.
    c.use_rot = True
    # Images smaller than the crop: 'upscale' (bicubic, keeping the aspect) or 'reject' (logged
    # with the path and skipped like an unreadable file).
    c.small_image_policy = "upscale"
    # Global batch size; each of P hosts produces batch_size / P examples (fixed shapes: the
    # last incomplete batch is dropped, as the contrastive loss needs a fixed batch).
    c.batch_size = 8
    # Worker processes per host for the per-example work (0 = in the main process).
    c.worker_count = 0
    # Examples each worker keeps ready.
    c.worker_buffer_size = 4
    # Threads per process that read and transform records, and their shared buffer.
    c.read_threads = 1
    c.read_buffer_size = 8
    # Seed of shuffling, crops, flips, degradations and masks.
    c.seed = 0
    # Shuffle each source (differently every epoch).
    c.shuffle = True
    # Passes over the data; None repeats forever (training).
    c.num_epochs = ml_collections.FieldReference(None, field_type=int)
    return c


def _get(config: Any, name: str) -> Any:
    """A field of config.data, falling back to the default."""
    if hasattr(config, name):
        value = getattr(config, name)
    elif isinstance(config, Mapping) and name in config:
        value = config[name]
    else:
        value = default_data_config()[name]
    return value


def seed_for(seed: int, *parts: int | str) -> int:
    """A 32-bit seed derived from ``seed`` and labels (e.g. 'shuffle', a source, a host)."""
    ints = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence([int(seed), *ints]).generate_state(1)[0])


def example_config(config: Any) -> examples.ExampleConfig:
    """The per-example settings of ``config.data``."""
    return examples.ExampleConfig(
        task=_get(config, "task"),
        scale=int(_get(config, "scale")) if _get(config, "task") == "sr" else 1,
        crop_size=int(_get(config, "crop_size")),
        use_resize_crop=bool(_get(config, "use_resize_crop")),
        use_flip=bool(_get(config, "use_flip")),
        use_rot=bool(_get(config, "use_rot")),
        small_image_policy=_get(config, "small_image_policy"),
    )


def host_batch_size(global_batch: int, process_count: int) -> int:
    """Examples per host; the global batch must split evenly over the hosts."""
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(f"batch_size {global_batch} must be a positive multiple of the number of "
                         f"hosts ({process_count})")
    return global_batch // process_count


class _SkipBadIterator(grain.DatasetIterator):
    """Drops ``{'bad': message}`` records (logging each), tags good ones with ``skipped``."""

    _MUTATES_ELEMENT_SPEC = True

    def __next__(self) -> dict[str, Any]:
        skipped = 0
        while True:
            element = next(self._parent)
            if "bad" not in element:
                element = dict(element)
                element["skipped"] = np.int32(skipped)
                return element
            skipped += 1
            logging.warning("Skipping unusable training image: %s", element["bad"])
            if skipped >= MAX_CONSECUTIVE_BAD:
                raise RuntimeError(f"{skipped} unusable records in a row (last: {element['bad']}); "
                                   "check the data sources")

    # Bad records are consumed before a good one is returned, so the parent's state is the
    # whole state.
    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)


class SkipBadRecords(grain.IterDataset):
    """IterDataset wrapper of :class:`_SkipBadIterator`."""

    def __iter__(self) -> grain.DatasetIterator:
        return _SkipBadIterator(self._parent.__iter__())


def _init_worker(worker_index: int, worker_count: int) -> None:
    """Each worker process is one core's worth of work: no OpenCV thread pool inside it."""
    del worker_index, worker_count
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(1)


def open_sources(config: Any) -> list[sources_lib.Source]:
    """Opens every entry of ``config.data.sources``; raises if there are none."""
    specs = list(_get(config, "sources") or [])
    if not specs:
        raise ValueError("config.data.sources is empty: add at least one image source")
    return [sources_lib.open_source(s) for s in specs]


def build_dataset(config: Any, *, shard_options: grain.sharding.ShardOptions | None = None,
                  opened_sources: list[sources_lib.Source] | None = None) -> grain.IterDataset:
    """Builds this host's batched training dataset from ``config.data``.

    Args:
      config: ``config.data`` (a ConfigDict or dict; missing fields take the defaults of
        :func:`default_data_config`).
      shard_options: which share of the data this host reads; defaults to
        ``ShardByJaxProcess(drop_remainder=True)``. Tests pass ``ShardOptions(i, n)``.
      opened_sources: source objects to use instead of opening ``config.data.sources`` (e.g.
        custom ones with ``keys``/``load``/``describe``/``weight``/``resize_range``).
    Returns:
      A ``grain.IterDataset`` of host batches (see the module docstring).
    """
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    batch = host_batch_size(int(_get(config, "batch_size")), shard.shard_count)
    cfg = example_config(config)
    srcs = opened_sources if opened_sources is not None else open_sources(config)
    seed = int(_get(config, "seed"))
    num_epochs = _get(config, "num_epochs")
    per_source = []
    for i, src in enumerate(srcs):
        keys = sources_lib.shard_keys(src.keys(), shard.shard_index, shard.shard_count,
                                      shard.drop_remainder)
        if not keys:
            raise ValueError(f"source {i} ({type(src).__name__}) has too few images for "
                             f"{shard.shard_count} hosts: host {shard.shard_index} gets none")
        check_source(src, keys, i)
        ds = grain.MapDataset.source([(i, k) for k in keys])
        if _get(config, "shuffle"):
            ds = ds.shuffle(seed=seed_for(seed, "shuffle", i, shard.shard_index))
        ds = ds.repeat(None if num_epochs is None else int(num_epochs))
        per_source.append(ds)
    if len(per_source) == 1:
        ds = per_source[0]
    else:
        ds = grain.MapDataset.mix(per_source, weights=[s.weight for s in srcs])
    ds = ds.random_map(examples.MakeExample(srcs, cfg),
                       seed=seed_for(seed, "examples", shard.shard_index))
    read = grain.ReadOptions(num_threads=int(_get(config, "read_threads")),
                             prefetch_buffer_size=int(_get(config, "read_buffer_size")))
    it = ds.to_iter_dataset(read)
    workers = int(_get(config, "worker_count"))
    if workers > 0:
        mp = grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=int(_get(config, "worker_buffer_size")))
        it = it.mp_prefetch(mp, worker_init_fn=_init_worker)
    it = SkipBadRecords(it)
    return it.batch(batch, drop_remainder=True)


def make_iterator(config: Any, **kwargs) -> grain.DatasetIterator:
    """``iter(build_dataset(config, **kwargs))``; close it with ``it.close()`` when done."""
    return iter(build_dataset(config, **kwargs))


def make_global_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                      batch_axes: str | tuple[str, ...] = "data") -> dict[str, jax.Array]:
    """Turns this host's batch into global arrays sharded over ``batch_axes`` of ``mesh``.

    Every leaf's first dimension is the batch; the global batch is the concatenation of the
    hosts' batches in process order (``jax.make_array_from_process_local_data``).
    """
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(batch_axes))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
