"""Multi-task heads: pure torch/numpy (no store or Prefect imports)."""
from heads.baselines import baselines, logistic_baseline
from heads.estimator import MultiTaskHeads
from heads.evaluate import evaluate
from heads.late import LateFusionHeads, load_head
from heads.metrics import classification_metrics, task_metrics
from heads.split import split_masks, split_of
from heads.tasks import MISSING, TaskSpec
from heads.weighting import WEIGHTINGS

__all__ = ["MultiTaskHeads", "LateFusionHeads", "load_head", "TaskSpec", "MISSING", "WEIGHTINGS", "baselines",
           "logistic_baseline", "evaluate", "classification_metrics", "task_metrics", "split_of", "split_masks"]
