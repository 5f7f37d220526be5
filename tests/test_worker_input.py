"""Each worker reads its share: `per_worker_batches` builds one pipeline per worker for its part of
the files; two loopback workers read disjoint halves of a streamed folder and train like one
process on the same global batches."""

import json
import logging
import os

import keras
import loopback_cluster as cluster
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import worker_input_job as job

from carl_tf import CARL, data
from carl_tf.errors import DataError, UsageError
from carl_tf.method.backbones import build_backbone
from carl_tf.training.worker_input import num_input_pipelines, per_worker_batches, steps_per_epoch

JOB = os.path.join(cluster.REPO, "tests", "worker_input_job.py")


def _write_noise_pngs(root, count: int, size: int) -> None:
    """`count` images of uniform noise, image i alone in class folder i (so its label is i)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        directory = root / f"c{i:03d}"
        directory.mkdir(parents=True)
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        (directory / "image.png").write_bytes(tf.io.encode_png(image).numpy())


@pytest.mark.slow
def test_two_workers_read_disjoint_halves_and_train_like_one_process(tmp_path):
    folder = tmp_path / "images"
    _write_noise_pngs(folder, job.NUM_IMAGES, job.IMAGE_SIZE)
    initial = tmp_path / "initial.weights.h5"
    keras.utils.set_random_seed(0)
    model = job.build_model()
    model.save_weights(initial)

    names = ["worker0", "worker1", "single"]
    configs = [*cluster.cluster_configs(2), None]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    processes = {
        name: cluster.launch(JOB, [str(folder), str(initial), str(tmp_path / name)], logs[name], c)
        for name, c in zip(names, configs)
    }
    cluster.check_exit_codes(cluster.wait(processes), dict.fromkeys(names, 0), logs)
    records = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in names}

    # Each worker built one pipeline: half of every global batch, from its own half of the files.
    half = job.GLOBAL_BATCH // 2
    for index in range(2):
        record = records[f"worker{index}"]
        assert record["built"] == [{"batch_size": half, "shard": [2, index]}]
        assert record["workers"] == 2 and record["steps"] == job.NUM_IMAGES // job.GLOBAL_BATCH
    assert records["single"]["built"] == [{"batch_size": job.GLOBAL_BATCH, "shard": [1, 0]}]
    assert records["single"]["steps"] == records["worker0"]["steps"]

    # One epoch: each worker yields each of its files once; the halves are disjoint and
    # together are every file. Shard i is elements i, i + 2, ... (no shuffle).
    halves = [records[f"worker{index}"]["labels"] for index in range(2)]
    assert [len(set(h)) for h in halves] == [job.NUM_IMAGES // 2] * 2
    assert not set(halves[0]) & set(halves[1])
    assert set(halves[0]) | set(halves[1]) == set(range(job.NUM_IMAGES))
    assert halves == [list(range(0, job.NUM_IMAGES, 2)), list(range(1, job.NUM_IMAGES, 2))]
    assert records["single"]["labels"] == list(range(job.NUM_IMAGES))
    steps = job.EPOCHS * records["single"]["steps"]
    assert [records[name]["optimizer_steps"] for name in names] == [steps] * 3

    worker0, worker1, single = (cluster.saved_weights(tmp_path / f"{n}.npz") for n in names)
    moved = [not np.allclose(w, w0) for w, w0 in zip(worker0, model.get_weights())]
    assert sum(moved) > len(moved) // 2, "training must actually move the weights"
    for got, want in zip(worker1, worker0):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(worker0, single):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_steps_per_epoch_counts_the_steps_every_worker_can_make():
    assert steps_per_epoch(64, 16, 1) == 4
    assert steps_per_epoch(64, 16, 2) == 4
    # 65 images: 32 per worker (one in no part), 8 per worker and step.
    assert steps_per_epoch(65, 16, 2) == 4
    assert steps_per_epoch(47, 8, 4) == 5  # 11 per worker, 2 per worker and step
    with pytest.raises(UsageError, match="batch size 6 does not split evenly among 4 workers"):
        steps_per_epoch(64, 6, 4)
    with pytest.raises(
        DataError, match="batch size 16 is larger than the 15 images; lower batch_size"
    ):
        steps_per_epoch(15, 16, 1)
    with pytest.raises(
        DataError, match="batch size 8 per part is larger than the 7 images in each of the 2 parts"
    ):
        steps_per_epoch(15, 16, 2)


def test_a_batch_that_does_not_split_among_the_replicas_is_refused(two_replicas):
    def build(batch_size, shard):
        raise AssertionError("nothing is built for a batch size that cannot work")

    with pytest.raises(UsageError, match=r"^batch size 15 .* 2 replicas; pass a multiple of 2"):
        per_worker_batches(two_replicas, 15, build)


def test_a_pipeline_that_ends_is_refused(two_replicas):
    def build(batch_size, shard):
        return tf.data.Dataset.range(8).batch(batch_size, drop_remainder=True)

    with pytest.raises(ValueError, match="repeats forever"):
        per_worker_batches(tf.distribute.get_strategy(), 4, build)
    with pytest.raises(ValueError, match="repeats forever"):
        per_worker_batches(two_replicas, 4, build)


class CountingModel(keras.Model):
    """Counts how often each label reaches a train step, summed over the replicas."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.counts = tf.Variable(
            tf.zeros(num_labels, tf.int64),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
        )

    def call(self, images):
        return self.dense(keras.ops.mean(keras.ops.cast(images, "float32"), axis=(1, 2)))

    def train_step(self, data):
        images, labels = data
        self.counts.assign_add(
            tf.math.bincount(labels, minlength=self.counts.shape[0], dtype=tf.int64)
        )
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(self(images) ** 2)
        self.optimizer.apply(
            tape.gradient(loss, self.trainable_variables), self.trainable_variables
        )
        return {"loss": loss}


def test_mirrored_fit_takes_every_image_once_per_epoch(tmp_path, two_replicas):
    """One machine, two replicas: one pipeline of per-replica batches; with the pipeline
    repeating and steps_per_epoch given, every epoch is one seeded permutation of the images."""
    count, global_batch = 24, 8
    np.savez(
        tmp_path / "images.npz",
        x=np.random.default_rng(0).integers(0, 256, (count, 4, 4, 3), dtype=np.uint8),
        y=np.arange(count),
    )
    source = data.load_source(f"npz:{tmp_path / 'images.npz'}", split="all")
    strategy = two_replicas
    built = []

    def build(batch_size, shard):
        built.append((batch_size, shard))
        return data.make_dataset(
            source,
            batch_size=batch_size,
            shuffle=True,
            drop_remainder=True,
            seed=1,
            repeat=True,
            shard=shard,
        )

    train_data = per_worker_batches(strategy, global_batch, build)
    assert built == [(global_batch // 2, (1, 0))] and num_input_pipelines(strategy) == 1
    steps = steps_per_epoch(count, global_batch, num_input_pipelines(strategy))
    with strategy.scope():
        model = CountingModel(count)
        model.compile(optimizer="sgd")
    per_epoch = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: per_epoch.append(model.counts.numpy().copy())
    )
    model.fit(
        train_data, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[record]
    )
    np.testing.assert_array_equal(per_epoch[0], np.ones(count))
    np.testing.assert_array_equal(per_epoch[1], np.full(count, 2))
    assert int(model.optimizer.iterations.numpy()) == 2 * steps


def test_a_pipeline_decodes_none_of_the_files_of_another_part(tmp_path):
    """Parts are chosen from the file list: a broken file in part 1 leaves part 0 as it is (had
    the files been decoded first, dropping it would shift every later file to the other part)."""
    _write_noise_pngs(tmp_path, 8, 8)
    (tmp_path / "c005" / "image.png").write_bytes(b"not an image")
    source = data.load_source(f"folder:{tmp_path}", image_size=8, memory_budget_bytes=1)
    parts = [
        [
            int(y)
            for _, y in data.make_dataset(
                source, batch_size=1, shuffle=False, drop_remainder=False, shard=(2, index)
            )
            .unbatch()
            .as_numpy_iterator()
        ]
        for index in range(2)
    ]
    assert parts == [[0, 2, 4, 6], [1, 3, 7]]


def _tfds_source(data_dir, count: int, files: int) -> data.ImageSource:
    """A TFDS split of `count` noise images in `files` TFRecord files, image i labelled i."""
    rng = np.random.default_rng(0)
    examples = [
        (f"x{i}", {"image": rng.integers(0, 256, (8, 8, 3), np.uint8), "label": i})
        for i in range(count)
    ]
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=count),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name="carl_worker_images",
        version="1.0.0",
        features=features,
        split_datasets={"train": examples},
        data_dir=data_dir,
        download_config=tfds.download.DownloadConfig(num_shards=files),
    )
    return data.load_source("carl_worker_images", data_dir=str(data_dir), memory_budget_bytes=1)


@pytest.mark.parametrize("kind", ["folder", "tfds"])
def test_shards_of_seeded_shuffled_epochs_are_disjoint_and_complete(kind, tmp_path):
    """Two pipelines in one process, as two workers build them with one seed: every epoch of
    `steps_per_epoch` steps takes each kept image once, from one of the two."""
    if kind == "folder":
        count = 17  # 8 files per worker, the 17th in no part
        _write_noise_pngs(tmp_path, count, 8)
        source = data.load_source(f"folder:{tmp_path}", image_size=8, memory_budget_bytes=1)
    else:
        # 4 files of 11: TFDS shuffles the files before each pipeline takes its part, so the
        # parts are disjoint only when both pipelines shuffle with the same seed.
        count = 44
        source = _tfds_source(tmp_path, count, 4)
    kept, global_batch = count - count % 2, 4
    steps = steps_per_epoch(count, global_batch, 2)
    assert steps * global_batch == kept  # so that an epoch is one pass over each part
    parts = []
    for index in range(2):
        dataset = data.make_dataset(
            source,
            batch_size=global_batch // 2,
            shuffle=True,
            drop_remainder=True,
            seed=5,
            repeat=True,
            shard=(2, index),
        )
        labels = np.concatenate([y for _, y in dataset.take(2 * steps).as_numpy_iterator()])
        parts.append(labels.reshape(2, -1))  # (epoch, position)
    for epoch in range(2):
        first, second = parts[0][epoch], parts[1][epoch]
        assert len(set(first)) == len(set(second)) == kept // 2
        assert not set(first) & set(second)
        assert set(first) | set(second) == set(range(kept))
    assert not np.array_equal(parts[0][0], parts[0][1]), "every epoch is reshuffled"


def test_carl_fit_takes_the_per_worker_batches_and_checks_their_range(caplog, two_replicas):
    rng = np.random.default_rng(0)
    strategy = two_replicas
    for scale, warned in ((255, False), (1, True)):
        images = (rng.uniform(0, 1, (16, 16, 16, 3)) * scale).astype("float32")

        def build(batch_size, shard, images=images):
            return tf.data.Dataset.from_tensor_slices(images).repeat().batch(batch_size)

        train_data = per_worker_batches(strategy, 8, build)
        with strategy.scope():
            backbone = build_backbone("resnet18", width=4, image_size=16)
            model = CARL(backbone, num_prototypes=4, projection_hidden_units=(8,), projection_dim=8)
            model.compile(optimizer="sgd")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="carl_tf.method.inputs"):
            model.fit(train_data, epochs=1, steps_per_epoch=1, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 1
        assert ("lie in [0, 1]" in caplog.text) == warned
