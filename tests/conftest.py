"""Test setup: the two tiers, quiet TensorFlow, two logical CPUs for the distribution tests, and
the one finished digits run that the tests reading a run share.

Tiers: `python -m pytest -q` runs the fast tier; tests marked `slow` (kill/resume, faults, cluster,
multi-worker, JAX processes, packaging, benchmarks, ImageNet smoke) run only with `--run-slow`,
and `python -m pytest -q --run-slow -m slow` runs them alone (what `.ci/run` does after the fast tier).
"""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import support  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must happen before TensorFlow initialises its devices, hence at collection time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the slow tier (tests marked slow); add -m slow to run it alone",
    )


def pytest_collection_modifyitems(config, items):
    """Without --run-slow the slow tier is deselected (not skipped: no line per test)."""
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def finished_digits(tmp_path_factory) -> support.FinishedRun:
    """The shared finished run: `train.py` on the digits smoke config (`support.FINISHED_ARGS`),
    trained once per test session in its own process. Read it only; `finished_run_copy` gives
    a copy to change."""
    workdir = tmp_path_factory.mktemp("shared") / "digits"
    result = support.train(*support.FINISHED_ARGS, f"--workdir={workdir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return support.FinishedRun(str(workdir), result)


@pytest.fixture(scope="session")
def finished_run_copy(finished_digits):
    """`copy(destination, ignore=None) -> str`: a copy of the shared finished run of one's own."""

    def copy(destination, ignore=None) -> str:
        shutil.copytree(finished_digits.workdir, destination, ignore=ignore)
        return str(destination)

    return copy


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
