"""One process of tests/test_multi_worker.py: fits a narrow CARL on digits and saves it.

With `TF_CONFIG` set it is one worker of a MultiWorkerMirroredStrategy cluster; without, it is the
single-process reference. Every run starts from the same initial weights and sees the same global
batches: premade view pairs (no random augmentation) in a fixed order, which the cluster splits
into per-worker halves (auto-sharding by DATA: worker i takes part i of every global batch).
Every worker backs up to its own `worker_workdir` with `BackupAndRestore`, so a cluster restarted
after a crash resumes after the last finished epoch. With `CRASH_AFTER_EPOCH=E` in the
environment the non-chief worker dies (exit code 3) once epoch E is backed up.

The digits get fixed noise. On the raw digits (flat background, 17 grey levels) the 1- and
2-replica runs parted by up to 1e-2 within 8 steps, from differences of 1e-7 after the first
(MirroredStrategy in one process too), presumably as large blocks of equal pre-activations
cross a ReLU's kink at different steps; with the noise they agree to about 1e-6.

Usage: python tests/multi_worker_job.py WORKDIR INITIAL_WEIGHTS FINAL_WEIGHTS_NPZ
"""

import os
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from carl_tf import CARL
from carl_tf.method.backbones import build_backbone
from carl_tf.run.strategy import is_chief, make_strategy, worker_workdir

IMAGE_SIZE = 16
NUM_IMAGES = 128
GLOBAL_BATCH = 64
EPOCHS = 2
CRASH_EXIT_CODE = 3


def build_model() -> CARL:
    """A ResNet-18 of width 4 with a small head: seconds per epoch on a CPU."""
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    return CARL(backbone, num_prototypes=10, projection_hidden_units=(32,), projection_dim=16)


def view_pairs() -> tf.data.Dataset:
    """Global batches of (digit, mirrored digit), the same on every worker and every epoch."""
    digits = load_digits().images[:NUM_IMAGES]  # (N, 8, 8), ink 0..16
    images = np.kron(digits, np.ones((2, 2)))[..., None].repeat(3, axis=-1) * (191 / 16)
    noise = np.random.default_rng(0).uniform(0, 64, images.shape)
    images = (images + noise).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, images[:, :, ::-1])).batch(
        GLOBAL_BATCH, drop_remainder=True
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class EpochLog(keras.callbacks.Callback):
    """Prints each epoch it starts; kills a non-chief worker after `crash_after` if given."""

    def __init__(self, crash_after: int | None):
        super().__init__()
        self.crash_after = crash_after

    def on_epoch_begin(self, epoch, logs=None):
        print(f"epoch {epoch} begins", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.crash_after:
            os._exit(CRASH_EXIT_CODE)  # no cleanup, as in a real crash


def main(workdir: str, initial_weights: str, final_weights: str) -> None:
    strategy = make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    with strategy.scope():
        model = build_model()
        model.load_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    write_dir = worker_workdir(workdir, strategy)
    print(f"writing to {write_dir}", flush=True)
    crash_after = os.environ.get("CRASH_AFTER_EPOCH")
    crash_after = None if crash_after is None or is_chief(strategy) else int(crash_after)
    # BackupAndRestore first: the epoch is backed up before a crash.
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(write_dir, "backup")),
        EpochLog(crash_after),
    ]
    model.fit(view_pairs(), epochs=EPOCHS, callbacks=callbacks, verbose=0)
    # Every worker saves (saving may need all of them); only the chief's copy is kept.
    os.makedirs(write_dir, exist_ok=True)
    model.save(os.path.join(write_dir, "carl.keras"))
    if not is_chief(strategy):
        shutil.rmtree(write_dir)
    np.savez(final_weights, *model.get_weights())


if __name__ == "__main__":
    main(*sys.argv[1:])
