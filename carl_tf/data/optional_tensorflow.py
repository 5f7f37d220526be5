"""TensorFlow where a path needs it, and a one-line error naming the fix where it is missing.

Digits, npz files and folders held in memory load without TensorFlow, as on a machine with only
JAX and Keras; TFDS datasets, streamed folders and the tf.data pipeline need it.
"""

from carl_tf.errors import UsageError


def tensorflow_or_none():
    """TensorFlow, or None where it cannot be imported (a machine with only JAX and Keras)."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def require_tensorflow(message: str):
    """TensorFlow, for a path that cannot work without it.

    Args:
        message: The error's one line where TensorFlow is missing: what needs it and the fix,
            e.g. "a TFDS dataset needs TensorFlow (pip install tensorflow tensorflow-datasets)".

    Raises:
        UsageError: With `message`, where TensorFlow cannot be imported.
    """
    tf = tensorflow_or_none()
    if tf is None:
        raise UsageError(message)
    return tf
