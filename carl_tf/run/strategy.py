"""Where the train step runs: the `tf.distribute` strategy of `--strategy`, and who may write.

`make_strategy` turns the flag into a strategy; the model must then be built and compiled in
`strategy.scope()`. Under `multi_worker` every worker runs the same program in lock step, but
only the chief may write the run's checkpoints, logs and export (TensorFlow's multi-worker
guide, https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras): the others
write the same files, which they must since saving may involve collectives, into a directory of
their own from `worker_workdir`. See docs/distributed.md.
"""

import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")

# One mirrored and one multi-worker strategy per process. A second MirroredStrategy starts its
# collective keys where the first did, so the first all-reduce of a model of other shapes fails
# ("Shape mismatch in the collective instance", tensorflow/tensorflow#62790): a notebook that
# trains twice would fail on the second run. TensorFlow allows one MultiWorkerMirroredStrategy
# per process anyway.
_MADE: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str, *, tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns the strategy named by `--strategy`.

    Args:
        name: One of `STRATEGIES`:
            `auto`: `mirrored` when more than one GPU is visible, else `default`;
            `default`: no distribution, the current device;
            `mirrored`: synchronous data parallelism over this machine's GPUs (its CPU if none);
            `multi_worker`: the same over several machines, the cluster read from `TF_CONFIG`;
            `tpu`: a TPU (pod slice), found by `tf.distribute.cluster_resolver.TPUClusterResolver`.
        tpu: For `tpu`: the TPU's name or `grpc://` address, `"local"` on a TPU VM; None reads
            the `TPU_NAME` environment variable, and without it lets the resolver look the TPU
            up from the Cloud metadata.

    Returns:
        The strategy. For `tpu` the TPU system is connected and initialised first.
        `mirrored` and `multi_worker` give the same strategy on every call in a process.

    Raises:
        ValueError: If `name` is unknown, or `multi_worker` is asked for without `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
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


def _made_once(name: str, make) -> tf.distribute.Strategy:
    if name not in _MADE:
        _MADE[name] = make()
    return _MADE[name]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
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


def worker_workdir(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """The directory this process writes to: `workdir` for the chief, a scratch one otherwise.

    A non-chief worker gets `<workdir>.workertemp_<task type>_<task index>`, next to `workdir`
    (on the same, usually shared, file system, so it survives the worker being moved to another
    host: its `BackupAndRestore` state must) and the same on every restart. The caller removes it
    when training has finished; its contents duplicate the chief's.

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
