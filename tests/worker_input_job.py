"""One process of tests/test_worker_input.py: reads its share of a streamed folder and fits on it.

With `TF_CONFIG` set it is one worker of a MultiWorkerMirroredStrategy cluster; without, it is the
single-process reference. Each process builds its input with
`carl_tf.training.worker_input.per_worker_batches` and `make_dataset(..., shard=...)`, records
which labels its pipeline yields in one epoch (every image of the folder has its own label), then
fits a narrow CARL for two epochs from the given initial weights, without shuffling and with the
same views in every process (`Identity` augmenter), and saves the weights.

With shard i of 2 holding elements i, i + 2, ..., the cluster's step j takes elements [j * B,
(j + 1) * B) of the folder, B/2 from each worker: the single process's step j with batch B.

Usage: python tests/worker_input_job.py FOLDER INITIAL_WEIGHTS OUTPUT_PREFIX
  writes OUTPUT_PREFIX.json (the pipelines built and the labels of one epoch) and
  OUTPUT_PREFIX.npz (the final weights).
"""

import json
import os
import sys

import keras
import numpy as np

from carl_tf import CARL, data
from carl_tf.method.backbones import build_backbone
from carl_tf.run.strategy import make_strategy
from carl_tf.training.worker_input import num_input_pipelines, per_worker_batches, steps_per_epoch

IMAGE_SIZE = 16
NUM_IMAGES = 64
GLOBAL_BATCH = 16
EPOCHS = 2


def build_model() -> CARL:
    """A ResNet-18 of width 4 with a small head; both views are the image itself."""
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    return CARL(
        backbone,
        num_prototypes=10,
        projection_hidden_units=(32,),
        projection_dim=16,
        augmenter=keras.layers.Identity(),
    )


def main(folder: str, initial_weights: str, output_prefix: str) -> None:
    strategy = make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    # A budget of one byte streams the folder: each image is decoded when its pipeline reads it.
    source = data.load_source(f"folder:{folder}", image_size=IMAGE_SIZE, memory_budget_bytes=1)
    built = []

    def build(batch_size: int, shard: tuple[int, int]):
        built.append({"batch_size": batch_size, "shard": list(shard)})
        return data.make_dataset(
            source,
            batch_size=batch_size,
            shuffle=False,
            drop_remainder=True,
            repeat=True,
            shard=shard,
        )

    train_data = per_worker_batches(strategy, GLOBAL_BATCH, build)
    workers = num_input_pipelines(strategy)
    steps = steps_per_epoch(source.num_examples, GLOBAL_BATCH, workers)

    labels = []
    for _, (_, batch_labels) in zip(range(steps), train_data):
        for local in strategy.experimental_local_results(batch_labels):
            labels += local.numpy().tolist()

    with strategy.scope():
        model = build_model()
        model.load_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit(train_data, epochs=EPOCHS, steps_per_epoch=steps, verbose=0, shuffle=False)
    np.savez(f"{output_prefix}.npz", *model.get_weights())
    record = {
        "built": built,
        "workers": workers,
        "steps": steps,
        "labels": labels,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
    }
    with open(f"{output_prefix}.json", "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
