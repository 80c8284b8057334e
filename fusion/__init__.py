"""Fusion methods: pure, scikit-learn-style estimators over modality blocks (no I/O here)."""
from fusion import align, concat, projection, weighted  # noqa: F401  (register)
from fusion.align import CcaFusion, PlsFusion, SharedSpaceFusion
from fusion.base import FUSIONS, Fusion, check_blocks, load_fusion
from fusion.concat import ConcatFusion, concat_fuse, l2_normalize
from fusion.guard import format_report
from fusion.projection import ProjectionFusion
from fusion.weighted import WeightedFusion, weighted_fuse

__all__ = ["FUSIONS", "Fusion", "ConcatFusion", "WeightedFusion", "CcaFusion", "PlsFusion", "SharedSpaceFusion",
           "ProjectionFusion", "concat_fuse", "weighted_fuse", "l2_normalize", "check_blocks", "load_fusion",
           "format_report"]
