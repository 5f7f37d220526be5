"""Test setup: quiet TensorFlow, two logical CPUs for the distribution tests, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must happen before TensorFlow initialises its devices, hence at collection time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(scope="session")
def two_replicas() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy over the two logical CPUs, shared by every in-process test.

    A second MirroredStrategy in the same process starts its collective keys where the first
    did, so the first all-reduce of a model of other shapes fails ("Shape mismatch in the
    collective instance", tensorflow/tensorflow#62790); `carl_tf.run.strategy.make_strategy`
    keeps one per process for the same reason.
    """
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


@pytest.fixture(autouse=True)
def keep_the_dtype_policy():
    """Restores Keras's global dtype policy after each test: a run in the test's process
    (`carl_tf.pretrain` with `precision=auto`) sets mixed_bfloat16 on CPUs with native bfloat16,
    which would make every later test's models compute in bfloat16."""
    import keras

    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
