"""carl_tf: Consistent Assignment for Representation Learning (CARL) in Keras 3 / TensorFlow.

Importing the package registers every Keras class its saved models contain, so
`keras.saving.load_model` reads any `.keras` file carl_tf writes after `import carl_tf` alone.
The jobs (`pretrain`, `evaluate`, `load_model`) and `KNNMonitor` load on first use, so the
import stays light: no TFDS, scikit-learn or flags.
"""

import importlib
from importlib import metadata

from carl_tf import _entry_point

_entry_point.import_tensorflow_quietly()

from carl_tf import errors  # noqa: E402
from carl_tf.method import backbones, losses, schedules  # noqa: E402
from carl_tf.method.augment import SimCLRAugment  # noqa: E402
from carl_tf.method.heads import ProjectionHead  # noqa: E402
from carl_tf.method.model import CARL  # noqa: E402
from carl_tf.method.normalization import FusedBatchNormalization  # noqa: E402
from carl_tf.method.schedules import KLWeightSchedule  # noqa: E402

try:
    __version__ = metadata.version("carl_tf")
except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "pretrain": "carl_tf.training.pretrain",
    "PretrainResult": "carl_tf.training.pretrain",
    "evaluate": "carl_tf.evaluation.evaluate",
    "EvaluationResult": "carl_tf.evaluation.evaluate",
    "load_model": "carl_tf.evaluation.loading",
    "KNNMonitor": "carl_tf.evaluation.monitor",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'carl_tf' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "CARL",
    "EvaluationResult",
    "FusedBatchNormalization",
    "KLWeightSchedule",
    "KNNMonitor",
    "PretrainResult",
    "ProjectionHead",
    "SimCLRAugment",
    "__version__",
    "backbones",
    "errors",
    "evaluate",
    "load_model",
    "losses",
    "pretrain",
    "schedules",
]
