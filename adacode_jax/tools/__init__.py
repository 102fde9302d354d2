"""Tools around the pipeline, not part of it: the real-photo corpus, the ADE20K segmentation
split, test-set builder, speed benchmarks (networks, data, communication), model sizes, the
official code's benchmark driver and ``make demo``."""
