"""Where the train step runs: the strategy of `--strategy`, and who may write.

`make_strategy` turns the flag into a strategy; the model must then be built and compiled in
`strategy.scope()`. Under the TensorFlow backend it is a `tf.distribute` strategy. Under
`multi_worker` every worker runs the same program in lock step, but only the chief may write the
run's checkpoints, logs and export (TensorFlow's multi-worker guide,
https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras): the others write the
same files, which they must since saving may involve collectives, into a directory of their own
from `worker_workdir`. See docs/distributed.md.

Under the JAX backend it is a `JaxStrategy`: the few members of a strategy that a run uses, over
a `keras.distribution.DataParallel` of this machine's devices (or none, on one device). Keras's
JAX trainer has no strategy object: it reads the current `keras.distribution` when `fit`,
`predict` or a weight load runs, not when the model is built, so `make_strategy` sets the
distribution for the process. One process is one worker there, hence always the chief.
"""

import contextlib
import dataclasses
import os

import keras

from carl_tf.errors import UsageError
from carl_tf.run.choices import STRATEGIES

# The strategies that need TensorFlow's cluster machinery, which the JAX backend does not use.
TENSORFLOW_ONLY = ("multi_worker", "tpu")

# One mirrored and one multi-worker strategy per process. A second MirroredStrategy starts its
# collective keys where the first did, so the first all-reduce of a model of other shapes fails
# ("Shape mismatch in the collective instance", tensorflow/tensorflow#62790): a notebook that
# trains twice would fail on the second run. TensorFlow allows one MultiWorkerMirroredStrategy
# per process anyway.
_MADE: dict = {}


@dataclasses.dataclass(frozen=True)
class JaxStrategy:
    """What a run uses of a `tf.distribute` strategy, under the JAX backend.

    Attributes:
        distribution: The data-parallel distribution over this machine's devices, or None on
            one device.
        cluster_resolver: Always None: one JAX process is one worker, the chief (`is_chief`).
    """

    distribution: keras.distribution.DataParallel | None = None
    cluster_resolver = None

    @property
    def num_replicas_in_sync(self) -> int:
        """Devices a step's batch is split over; the batch size must be a multiple of it."""
        return self.distribution.num_model_replicas if self.distribution else 1

    def scope(self):
        """Makes `distribution` current (already so after `make_strategy`)."""
        return self.distribution.scope() if self.distribution else contextlib.nullcontext()


def make_strategy(name: str, *, tpu: str | None = None):
    """Returns the strategy named by `--strategy`.

    Args:
        name: One of `STRATEGIES`. Under the TensorFlow backend:
            `auto`: `mirrored` when more than one GPU is visible, else `default`;
            `default`: no distribution, the current device;
            `mirrored`: synchronous data parallelism over this machine's GPUs (its CPU if none);
            `multi_worker`: the same over several machines, the cluster read from `TF_CONFIG`;
            `tpu`: a TPU (pod slice), found by `tf.distribute.cluster_resolver.TPUClusterResolver`.
            Under the JAX backend (`JaxStrategy`): `auto` is `mirrored` when JAX sees several
            devices, else `default`; `default` is one device; `mirrored` a
            `keras.distribution.DataParallel` over all local devices; `multi_worker` and `tpu`
            are refused.
        tpu: For `tpu`: the TPU's name or `grpc://` address, `"local"` on a TPU VM; None reads
            the `TPU_NAME` environment variable, and without it lets the resolver look the TPU
            up from the Cloud metadata.

    Returns:
        The strategy. For `tpu` the TPU system is connected and initialised first.
        `mirrored` and `multi_worker` give the same strategy on every call in a process.
        Under JAX the strategy's distribution (None for one device) is set for the process.

    Raises:
        ValueError: If `name` is unknown, or `multi_worker` is asked for without `TF_CONFIG`.
        UsageError: If `multi_worker` or `tpu` is asked for under the JAX backend.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if keras.backend.backend() == "jax":
        return _jax_strategy(name)
    import tensorflow as tf  # only under the TensorFlow backend

    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _made_once(name, tf.distribute.MirroredStrategy)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy multi_worker needs the cluster in the TF_CONFIG environment variable "
                "on every worker; see docs/distributed.md"
            )
        return _made_once(name, tf.distribute.MultiWorkerMirroredStrategy)
    # The resolver reads TPU_NAME itself, but takes the direct-attached path of a TPU VM only
    # when "local" is passed as the argument.
    tpu = tpu or os.environ.get("TPU_NAME")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _made_once(name: str, make):
    if name not in _MADE:
        _MADE[name] = make()
    return _MADE[name]


def _jax_strategy(name: str) -> JaxStrategy:
    """The `JaxStrategy` of `name`, its distribution set for the process (see the module)."""
    if name in TENSORFLOW_ONLY:
        raise UsageError(
            f"strategy {name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow)",
            "under JAX set strategy to auto, default or mirrored (the devices of one machine)",
            fields=("strategy",),
        )
    devices = keras.distribution.list_devices()
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        strategy = JaxStrategy(keras.distribution.DataParallel(devices=devices))
    else:
        strategy = JaxStrategy()
    keras.distribution.set_distribution(strategy.distribution)
    return strategy


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: the `chief` task, else worker 0.

    Single-process strategies have no cluster, so their one process is the chief. Under
    `multi_worker` the task comes from `TF_CONFIG` through the strategy's cluster resolver.
    """
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    if resolver.task_type != "worker" or resolver.task_id != 0:
        return False
    return "chief" not in resolver.cluster_spec().jobs


def worker_workdir(workdir: str, strategy) -> str:
    """The directory this process writes to: `workdir` for the chief, a scratch one otherwise.

    A non-chief worker gets `<workdir>.workertemp_<task type>_<task index>`, next to `workdir`
    (on the same, usually shared, file system, so a worker restarted on another host finds it
    again) and the same on every restart. The caller removes it when training has finished; its
    contents duplicate the chief's.

    Args:
        workdir: The run's directory, as given to every worker.
        strategy: The strategy the run trains under.

    Returns:
        A path; the directory is not created.
    """
    if is_chief(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    return f"{workdir.rstrip('/')}.workertemp_{resolver.task_type}_{resolver.task_id}"
