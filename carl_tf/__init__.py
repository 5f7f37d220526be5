"""carl_tf: Consistent Assignment for Representation Learning (CARL) in Keras 3 / TensorFlow."""

import os
import sys


def _import_tensorflow_quietly() -> None:
    """Holds stderr back while TensorFlow loads, when TF_CPP_MIN_LOG_LEVEL asks for quiet.

    TensorFlow 2.21 prints its C++ start-up notices (oneDNN, CUDA stubs) before that variable
    takes effect; entry points set it so users see carl_tf's messages rather than this noise.
    """
    if int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0) < 1 or "tensorflow" in sys.modules:
        return
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


_import_tensorflow_quietly()

from carl_tf import losses, schedules  # noqa: E402
from carl_tf.augment import SimCLRAugment  # noqa: E402
from carl_tf.callbacks import KLWeightSchedule  # noqa: E402
from carl_tf.heads import ProjectionHead  # noqa: E402
from carl_tf.model import CARL  # noqa: E402

__all__ = ["CARL", "KLWeightSchedule", "ProjectionHead", "SimCLRAugment", "losses", "schedules"]
