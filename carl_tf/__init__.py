"""carl_tf: Consistent Assignment for Representation Learning (CARL) in Keras 3 / TensorFlow."""

from carl_tf import losses, schedules
from carl_tf.callbacks import KLWeightSchedule
from carl_tf.heads import ProjectionHead
from carl_tf.model import CARL

__all__ = ["CARL", "KLWeightSchedule", "ProjectionHead", "losses", "schedules"]
