"""Makes TensorFlow and its family unimportable, as on a machine that has only JAX and Keras.

Put this folder first on PYTHONPATH (`tests/jax_support.py` does) and Python runs this file at
start-up: every `import tensorflow` (or TensorBoard, TFDS, KerasCV) then raises
ModuleNotFoundError, as it would where those wheels are not installed.
"""

import importlib.abc
import sys

_BLOCKED = ("tensorflow", "tensorboard", "tensorflow_datasets", "keras_cv", "tf_keras")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
