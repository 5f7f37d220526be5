"""Makes TensorFlow and its family unimportable, as on a machine that has only JAX and Keras.

Put this folder first on PYTHONPATH (`tests/jax_support.py` does) and Python runs this file at
start-up: every `import tensorflow` (or TensorBoard, TFDS, KerasCV) then raises
ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` returns None, as they do where
those wheels are not installed. (A finder that raised instead of answering None broke the code
that asks first, such as JAX's persistent compilation cache, which asks etils whether
TensorFlow's file system is there.)
"""

import sys

_BLOCKED = ("tensorflow", "tensorboard", "tensorflow_datasets", "keras_cv", "tf_keras")


class _Hiding:
    """Wraps one of `sys.meta_path`'s finders: it finds nothing of `_BLOCKED`, all else as before."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def __getattr__(self, name):  # invalidate_caches, find_distributions, ...
        return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
