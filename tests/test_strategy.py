"""Strategy selection and the chief/worker split, without real GPUs, clusters or TPUs."""

import json
import types

import pytest
import tensorflow as tf
from jax_support import requires_jax, run_under_jax

from carl_tf.run import strategy as strategy_module
from carl_tf.run.strategy import STRATEGIES, is_chief, make_strategy, worker_workdir


@pytest.fixture(autouse=True)
def fresh_strategies(monkeypatch):
    """Each test makes its strategies anew (make_strategy keeps one per process)."""
    monkeypatch.setattr(strategy_module, "_MADE", {})


class _Recorder:
    """Stands in for a strategy class: records how it was constructed."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _gpus(monkeypatch, count):
    devices = [tf.config.LogicalDevice(f"/device:GPU:{i}", "GPU") for i in range(count)]
    real = tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config,
        "list_logical_devices",
        lambda kind=None: devices if kind == "GPU" else real(kind),
    )


def _tf_config(monkeypatch, cluster, task_type, index):
    config = {"cluster": cluster, "task": {"type": task_type, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))


def _cluster_strategy():
    """A strategy whose task comes from TF_CONFIG, as MultiWorkerMirroredStrategy's does."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize("gpus", [0, 1])
def test_auto_is_the_default_strategy_without_several_gpus(monkeypatch, gpus):
    _gpus(monkeypatch, gpus)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", _Recorder)
    assert make_strategy("auto") is tf.distribute.get_strategy()


def test_auto_mirrors_over_several_gpus(monkeypatch):
    _gpus(monkeypatch, 2)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", _Recorder)
    assert isinstance(make_strategy("auto"), _Recorder)


def test_default_and_mirrored():
    assert make_strategy("default") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert is_chief(mirrored)


def test_multi_worker_reads_the_cluster_from_tf_config(monkeypatch):
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _Recorder)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 1)
    assert isinstance(make_strategy("multi_worker"), _Recorder)


def test_tpu_connects_initialises_then_builds_the_strategy(monkeypatch):
    calls = []
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", _Recorder)
    monkeypatch.setattr(
        tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r))
    )
    monkeypatch.setattr(
        tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("init", r))
    )
    monkeypatch.setattr(tf.distribute, "TPUStrategy", _Recorder)
    monkeypatch.delenv("TPU_NAME", raising=False)
    strategy = make_strategy("tpu", tpu="my-tpu")
    resolver = strategy.args[0]
    assert resolver.kwargs == {"tpu": "my-tpu"}
    assert calls == [("connect", resolver), ("init", resolver)]
    # On a TPU VM, TPU_NAME=local selects the directly attached TPU.
    monkeypatch.setenv("TPU_NAME", "local")
    assert make_strategy("tpu").args[0].kwargs == {"tpu": "local"}


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ValueError, match=", ".join(STRATEGIES)):
        make_strategy("horovod")


@pytest.mark.parametrize(
    "cluster, task_type, index, chief",
    [
        ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, "chief", 0, True),
        ({"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0, False),
        ({"chief": ["c:0"], "worker": ["a:1"], "evaluator": ["e:3"]}, "evaluator", 0, False),
    ],
)
def test_is_chief_follows_tf_config(monkeypatch, cluster, task_type, index, chief):
    _tf_config(monkeypatch, cluster, task_type, index)
    assert is_chief(_cluster_strategy()) is chief


def test_single_process_strategies_are_chief(monkeypatch):
    # A TF_CONFIG left in the environment does not make a single-process run a worker.
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 1)
    assert is_chief(tf.distribute.get_strategy())


def test_only_the_chief_gets_the_workdir(monkeypatch):
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 0)
    assert worker_workdir("/runs/cifar10", _cluster_strategy()) == "/runs/cifar10"
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 1)
    for workdir in ("gs://bucket/runs/cifar10", "gs://bucket/runs/cifar10/"):
        expected = "gs://bucket/runs/cifar10.workertemp_worker_1"
        assert worker_workdir(workdir, _cluster_strategy()) == expected


# Two runs of CARL, of different widths, each on make_strategy("mirrored") over two logical CPUs.
_TWO_RUNS = """
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from carl_tf import CARL
from carl_tf.method.backbones import build_backbone
from carl_tf.run import strategy
two_cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
real = tf.distribute.MirroredStrategy
tf.distribute.MirroredStrategy = lambda: real(two_cpus)  # stands in for a machine's two GPUs
images = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
for width in (4, 8):
    mirrored = strategy.make_strategy("mirrored")
    with mirrored.scope():
        backbone = build_backbone("resnet18", width=width, image_size=16)
        model = CARL(backbone, num_prototypes=4, projection_hidden_units=(8,), projection_dim=8)
        model.compile(optimizer="sgd")
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0)
print("both runs trained")
"""


def test_a_second_mirrored_run_in_one_process_trains(tmp_path):
    """tensorflow#62790: a second MirroredStrategy fails the next model's first all-reduce
    ("Shape mismatch in the collective instance"), as this script does when make_strategy
    makes a new one on every call."""
    import os
    import subprocess
    import sys

    script = tmp_path / "two_runs.py"
    script.write_text(_TWO_RUNS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "both runs trained" in run.stdout


_JAX_STRATEGIES = """
import keras
from carl_tf.errors import UsageError
from carl_tf.run.strategy import is_chief, make_strategy, worker_workdir
for name in ("auto", "default", "mirrored"):
    strategy = make_strategy(name)
    assert keras.distribution.distribution() is strategy.distribution
    assert is_chief(strategy) and worker_workdir("runs/x", strategy) == "runs/x"
    print(name, strategy.num_replicas_in_sync)
for name in ("multi_worker", "tpu"):
    try:
        make_strategy(name)
    except UsageError as error:
        print(name, error)
"""


@pytest.mark.slow
@requires_jax
@pytest.mark.parametrize("devices", [1, 2])
def test_jax_strategies_without_tensorflow(devices):
    """Under JAX: auto is data parallel over several devices only, mirrored over all of them,
    default one device, every process the chief; multi_worker and tpu are one-line refusals."""
    result = run_under_jax(["-c", _JAX_STRATEGIES], devices=devices, without_tensorflow=True)
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"auto {devices}", "default 1", f"mirrored {devices}"]
    for name, line in zip(("multi_worker", "tpu"), lines[3:], strict=True):
        assert line.startswith(f"{name} strategy {name} needs the TensorFlow backend")
        assert line.endswith(
            "under JAX set strategy to auto, default or mirrored (the devices of one machine)"
        )
