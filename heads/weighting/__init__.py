from heads.weighting import dwa, equal, fixed, gradnorm, pcgrad, uncertainty  # noqa: F401  (register)
from heads.weighting.base import WEIGHTINGS, TrainState, Weighting, task_gradients
from heads.weighting.dwa import DwaWeighting
from heads.weighting.equal import EqualWeighting
from heads.weighting.fixed import FixedWeighting
from heads.weighting.gradnorm import GradNormWeighting
from heads.weighting.pcgrad import PcGradWeighting, project_conflicting
from heads.weighting.uncertainty import UncertaintyWeighting

__all__ = ["WEIGHTINGS", "TrainState", "Weighting", "task_gradients", "EqualWeighting", "FixedWeighting",
           "UncertaintyWeighting", "DwaWeighting", "GradNormWeighting", "PcGradWeighting", "project_conflicting"]
