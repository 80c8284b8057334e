from heads.weighting import equal  # noqa: F401  (registers)
from heads.weighting.base import WEIGHTINGS, TrainState, Weighting
from heads.weighting.equal import EqualWeighting

__all__ = ["WEIGHTINGS", "TrainState", "Weighting", "EqualWeighting"]
