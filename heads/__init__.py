"""Multi-task heads: pure torch/numpy (no store or Prefect imports)."""
from heads.estimator import MultiTaskHeads
from heads.metrics import classification_metrics, task_metrics
from heads.split import split_masks, split_of
from heads.tasks import MISSING, TaskSpec
from heads.weighting import WEIGHTINGS

__all__ = ["MultiTaskHeads", "TaskSpec", "MISSING", "WEIGHTINGS", "classification_metrics", "task_metrics", "split_of", "split_masks"]
