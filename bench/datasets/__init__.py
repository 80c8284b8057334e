"""Public image+text data sets for the quality benchmarks, fetched through a package registry.

Each module returns a :class:`~bench.datasets.base.Dataset` (ids, texts, image paths, label
columns, groups for splits); :mod:`bench.datasets.features` embeds them with plait's own
encoders and caches the vectors in ``bench/data/``.
"""
