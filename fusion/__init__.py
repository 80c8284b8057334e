"""Fusion methods: pure, scikit-learn-style estimators over modality blocks (no I/O here)."""
from fusion import concat  # noqa: F401  (registers)
from fusion.base import FUSIONS, Fusion, check_blocks, load_fusion
from fusion.concat import ConcatFusion, concat_fuse, l2_normalize

__all__ = ["FUSIONS", "Fusion", "ConcatFusion", "concat_fuse", "l2_normalize", "check_blocks", "load_fusion"]
