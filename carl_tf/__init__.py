"""carl_tf: Consistent Assignment for Representation Learning (CARL) in Keras 3 / TensorFlow.

Importing the package registers every Keras class its saved models contain, so
`keras.saving.load_model` reads any `.keras` file carl_tf writes after `import carl_tf` alone.
The jobs (`pretrain`, `evaluate`, `load_model`, `export_backbone`, `embed_images`) and
`KNNMonitor` load on first use, so the import stays light: no TFDS, scikit-learn or flags.

In carl_tf's own command-line programs every public name loads on first use, so the programs
check their flags and config before TensorFlow and Keras load (seconds), and a mistake is
reported at once (`carl_tf.cli.common.load_keras` then loads them).
"""

import importlib
from importlib import metadata

from carl_tf import _entry_point, errors, method

# Public name -> module that defines it (a module itself when the name is the module's last part).
_LAZY = {
    "CARL": "carl_tf.method.model",
    "SimCLR": "carl_tf.method.simclr",
    "FusedBatchNormalization": "carl_tf.method.normalization",
    "KLWeightSchedule": "carl_tf.method.schedules",
    "ProjectionHead": "carl_tf.method.heads",
    "SimCLRAugment": "carl_tf.method.augment",
    "backbones": "carl_tf.method.backbones",
    "losses": "carl_tf.method.losses",
    "schedules": "carl_tf.method.schedules",
    "pretrain": "carl_tf.training.pretrain",
    "PretrainResult": "carl_tf.training.pretrain",
    "evaluate": "carl_tf.evaluation.evaluate",
    "EvaluationResult": "carl_tf.evaluation.evaluate",
    "load_model": "carl_tf.evaluation.loading",
    "KNNMonitor": "carl_tf.evaluation.monitor",
    "export_backbone": "carl_tf.run.export",
    "embed_images": "carl_tf.evaluation.embed",
    "EmbedResult": "carl_tf.evaluation.embed",
}
# The names of `_LAZY` that are modules.
_MODULES = {"backbones", "losses", "schedules"}

if not _entry_point.is_entry_point():
    # A library user's import: TensorFlow loads now, with its start-up notices printed once, and
    # every Keras class carl_tf saves is registered.
    _entry_point.import_tensorflow_once()
    method.register_saved_classes()

try:
    __version__ = metadata.version("carl_tf")
except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name in _MODULES else getattr(module, name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'carl_tf' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "CARL",
    "EmbedResult",
    "EvaluationResult",
    "FusedBatchNormalization",
    "KLWeightSchedule",
    "KNNMonitor",
    "PretrainResult",
    "ProjectionHead",
    "SimCLR",
    "SimCLRAugment",
    "__version__",
    "backbones",
    "embed_images",
    "errors",
    "evaluate",
    "export_backbone",
    "load_model",
    "losses",
    "pretrain",
    "schedules",
]
