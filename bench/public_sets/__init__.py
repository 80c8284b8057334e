"""Public image+text data sets for the quality benchmarks, fetched through a package registry.

Each module returns a :class:`~bench.public_sets.base.Dataset` (ids, texts, image paths, label
columns, groups for splits); :mod:`bench.public_sets.features` embeds them with plait's own
encoders and caches the vectors in ``bench/data/``.
"""
