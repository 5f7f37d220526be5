"""One process of tests/test_multi_worker.py: fits a narrow CARL on digits and saves it.

With `TF_CONFIG` set it is one worker of a MultiWorkerMirroredStrategy cluster; without, it is the
single-process reference. Every run starts from the same initial weights and sees the same global
batches: premade view pairs (no random augmentation) in a fixed order, which the cluster splits
into per-worker halves (auto-sharding by DATA: worker i takes part i of every global batch).

The digits get fixed noise: their flat background makes whole regions of a ReLU's input exactly
equal, and when such a tied block crosses the kink the gradient jumps. Rounding differences
between a 1- and a 2-replica sum (1e-7) then decide the step it jumps at, and the raw-digit runs
part by up to 1e-2 within 8 steps (so does MirroredStrategy in one process); with the noise they
agree to about 1e-6.

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
from carl_tf.backbones import build_backbone
from carl_tf.strategy import is_chief, make_strategy, worker_workdir

IMAGE_SIZE = 16
NUM_IMAGES = 128
GLOBAL_BATCH = 64
EPOCHS = 2


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


def main(workdir: str, initial_weights: str, final_weights: str) -> None:
    strategy = make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    with strategy.scope():
        model = build_model()
        model.load_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    write_dir = worker_workdir(workdir, strategy)
    print(f"writing to {write_dir}", flush=True)
    backup = keras.callbacks.BackupAndRestore(os.path.join(write_dir, "backup"))
    model.fit(view_pairs(), epochs=EPOCHS, callbacks=[backup], verbose=0)
    # Every worker saves (saving may need all of them); only the chief's copy is kept.
    os.makedirs(write_dir, exist_ok=True)
    model.save(os.path.join(write_dir, "carl.keras"))
    if not is_chief(strategy):
        shutil.rmtree(write_dir)
    np.savez(final_weights, *model.get_weights())


if __name__ == "__main__":
    main(*sys.argv[1:])
