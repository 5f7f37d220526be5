"""The training batches under a `tf.distribute` strategy, each worker reading only its share.

Given a plain dataset, Keras distributes it with `strategy.experimental_distribute_dataset`, whose
default auto-shard policy falls back to sharding by DATA for a dataset built from a list of files
or arrays: every worker reads and decodes every image, then keeps 1/N of them. Here
`strategy.distribute_datasets_from_function` calls the pipeline builder once per input pipeline
(one per worker) with its `tf.distribute.InputContext`, and the builder reads only that
pipeline's part of the source (`make_dataset`'s `shard`), which a streamed source chooses before
it decodes anything.

Use it as:

    def build(batch_size, shard):
        return data.make_dataset(source, batch_size=batch_size, shuffle=True,
                                 drop_remainder=True, seed=seed, repeat=True, shard=shard)

    train_data = per_worker_batches(strategy, global_batch_size, build)
    steps = steps_per_epoch(source.num_examples, global_batch_size,
                            num_input_pipelines(strategy))
    model.fit(train_data, epochs=epochs, steps_per_epoch=steps)

The pipeline must repeat and `fit` must be given `steps_per_epoch`; measured with Keras 3.15:
without them, Keras takes the length of an epoch from the cardinality of one pipeline, which
counts per-replica batches, not steps (10 "steps" for 5 on one machine with two replicas); and an
epoch that ends when a pipeline of unknown length (a streamed folder) runs out ends with a failed
step that can still advance `optimizer.iterations`, the learning-rate schedule's step count (6 per
epoch of 5 steps on one device).

Under the JAX backend (`carl_tf.run.strategy.JaxStrategy`) there is one process and one input
pipeline, whatever the devices: Keras's JAX trainer splits each global batch over the
distribution's devices itself. No TensorFlow is imported then.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras

from carl_tf.data.splits import Shard, check_batch_size
from carl_tf.errors import UsageError
from carl_tf.run.strategy import JaxStrategy

if TYPE_CHECKING:  # imported where a tf.distribute strategy is in use
    import tensorflow as tf

# (batch_size, shard) -> the repeating dataset of one input pipeline, batched at batch_size.
BuildFn = Callable[[int, Shard], "tf.data.Dataset | keras.utils.PyDataset"]


def per_worker_batches(
    strategy, global_batch_size: int, build: BuildFn
) -> "tf.data.Dataset | tf.distribute.DistributedDataset | keras.utils.PyDataset":
    """The training input of `strategy`, each input pipeline built for its own part of the data.

    Under a strategy of one replica this is `build(global_batch_size, (1, 0))`. Under any other
    (`mirrored`, `multi_worker`; `tpu` too, untested) it is
    `strategy.distribute_datasets_from_function`, which calls `build` once per input pipeline
    with the per-replica batch and the pipeline's shard
    `(num_input_pipelines, input_pipeline_id)` from its `tf.distribute.InputContext`. A step takes
    one batch from a pipeline for each of its worker's replicas, so the step's global batch is
    `global_batch_size` images, `global_batch_size / num_input_pipelines` from each pipeline.

    `mirrored` on one machine goes the same way, with one pipeline and shard (1, 0): each step
    then takes consecutive per-replica batches of that pipeline in replica order, which are the
    images (and split) Keras's own `experimental_distribute_dataset` makes of one pipeline's
    global batch. So the batches do not depend on the strategy beyond the number of pipelines.

    Args:
        strategy: The strategy the model is built and trained under (`make_strategy`'s).
        global_batch_size: Images per step over all replicas (`--batch_size`).
        build: `build(batch_size, shard)` returns the dataset of one input pipeline: batches of
            `batch_size` images from part `shard = (count, index)` of the source, repeated
            forever (`fit` then needs `steps_per_epoch`): a tf.data dataset, or under JAX an
            endless `keras.utils.PyDataset` (`carl_tf.data.array_batches`). Give every
            pipeline the same shuffle seed: a source may shuffle its files before it takes its
            part (a TFDS split does), and the parts are disjoint only if every pipeline
            shuffles them alike.

    Returns:
        A `tf.data.Dataset` (or `PyDataset`) under one replica or JAX, else a
        `tf.distribute.DistributedDataset`; all go to `fit` as they are.

    Raises:
        UsageError: If `global_batch_size` is not a multiple of the strategy's replicas.
        ValueError: If `build` returns a dataset that does not repeat forever.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise UsageError(
            f"batch size {global_batch_size} does not split evenly among the {replicas} replicas",
            f"pass a multiple of {replicas} as batch_size",
            fields=("batch_size",),
        )
    if replicas == 1 or isinstance(strategy, JaxStrategy):
        return _repeating(build(global_batch_size, (1, 0)))

    def dataset_fn(context: "tf.distribute.InputContext") -> "tf.data.Dataset":
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return _repeating(build(context.get_per_replica_batch_size(global_batch_size), shard))

    return strategy.distribute_datasets_from_function(dataset_fn)


def _repeating(dataset):
    if isinstance(dataset, keras.utils.PyDataset):
        endless = dataset.num_batches is None
    else:
        import tensorflow as tf  # a tf.data dataset: TensorFlow is installed

        endless = dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    if not endless:
        raise ValueError(
            "per_worker_batches needs a pipeline that repeats forever (make_dataset's "
            "repeat=True), with fit's steps_per_epoch from steps_per_epoch()"
        )
    return dataset


def num_input_pipelines(strategy) -> int:
    """How many input pipelines `per_worker_batches` builds under `strategy`, over all workers.

    One per worker (the `chief` and `worker` tasks of `TF_CONFIG`) under `multi_worker`, one per
    host under `tpu` (untested), otherwise (and under JAX) 1: the `num_input_pipelines` of the
    strategy's input contexts, known before any pipeline is built.
    """
    if strategy.num_replicas_in_sync == 1 or isinstance(strategy, JaxStrategy):
        return 1
    import tensorflow as tf  # a multi-replica tf.distribute strategy

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        spec = strategy.cluster_resolver.cluster_spec()
        return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs) or 1
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return strategy.extended.num_hosts
    return 1


def steps_per_epoch(num_examples: int, global_batch_size: int, num_workers: int) -> int:
    """The steps of an epoch that every one of `num_workers` input pipelines can make.

    Each pipeline reads `num_examples // num_workers` images (the last `num_examples %
    num_workers` are in no part) and contributes `global_batch_size / num_workers` of them to
    every step; an epoch is as many whole steps as that part fills. The count always equals
    `num_examples // global_batch_size`; the check is that every part fills one step.

    Args:
        num_examples: Images in the source; for a streamed folder the file count, so files that
            fail to decode shift later epochs by as many images instead of shortening any.
        global_batch_size: Images per step over all replicas.
        num_workers: Input pipelines (`num_input_pipelines(strategy)`).

    Raises:
        UsageError: If `global_batch_size` is not a multiple of `num_workers`.
        DataError: If a pipeline's part is smaller than its share of one step.
    """
    if global_batch_size % num_workers:
        raise UsageError(
            f"batch size {global_batch_size} does not split evenly among {num_workers} workers",
            f"pass a multiple of {num_workers} as batch_size",
            fields=("batch_size",),
        )
    share = global_batch_size // num_workers
    check_batch_size(share, num_examples, num_workers)
    return num_examples // num_workers // share
