"""The JAX side of tests/test_jax_backend.py: CARL train steps under Keras's JAX backend.

    python tests/jax_backend_job.py INITIAL_WEIGHTS MODEL.keras VIEWS.npz IMAGES.npz OUT_DIR

Run with two host devices. Each step starts from INITIAL_WEIGHTS (the tiny model of
`build_model`, which the test process builds under TensorFlow from this file), takes one SGD step
and writes its figures and every variable after it to OUT_DIR/NAME.npz:

* `one_sided`, `symmetric`: on the view pairs of VIEWS.npz (`view_a`, `view_b`), one device;
* `one_device`, `data_parallel`: on the raw images of IMAGES.npz (views made on device), on one
  device and under `keras.distribution.DataParallel` over both;
* `half_batch`: on the first half of those images, one device.

It also loads MODEL.keras (saved under TensorFlow) and writes its assignments of the first
views to OUT_DIR/loaded.npz (`probabilities`). One process runs them all: each process pays JAX's start-up and compilation once.
"""

import sys

import keras
import numpy as np

from carl_tf import CARL
from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.backbones import build_backbone

IMAGE_SIZE = 16
# SGD without momentum at rate 1: the change of each weight is its gradient (plus weight decay 0).
LEARNING_RATE = 1.0


def build_model(symmetric: bool = False) -> CARL:
    """A ResNet-18 of width 4 on 16 px views, K = 10, compiled with plain SGD."""
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    model = CARL(
        backbone,
        num_prototypes=10,
        projection_hidden_units=(32,),
        projection_dim=8,
        augmenter=SimCLRAugment(image_size=IMAGE_SIZE, seed=3),
        symmetric=symmetric,
    )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    return model


def variables_of(model: CARL) -> dict[str, np.ndarray]:
    """Every weight (trainable and not, BatchNorm statistics included), keyed by its position
    and its name (paths hold the model's name, which differs between two models of a process)."""
    return {f"{i}:{v.name}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)}


def step(initial: str, batch, symmetric: bool = False) -> dict[str, np.ndarray]:
    """One train step from `initial` on `batch`: its figures and the variables after it."""
    model = build_model(symmetric=symmetric)
    model.load_weights(initial)
    figures = model.train_on_batch(batch, return_dict=True)
    return {
        **{f"figure/{k}": np.asarray(v) for k, v in figures.items()},
        **{f"variable/{k}": v for k, v in variables_of(model).items()},
    }


def main(initial: str, saved_model: str, views_path: str, images_path: str, out_dir: str):
    views = np.load(views_path)
    pair = (views["view_a"], views["view_b"])
    loaded = keras.saving.load_model(saved_model)
    np.savez(f"{out_dir}/loaded.npz", probabilities=loaded.predict(pair[0], verbose=0))
    images = np.load(images_path)["images"]
    one_device = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    both = keras.distribution.DataParallel()
    steps = {
        "one_sided": (one_device, pair, False),
        "symmetric": (one_device, pair, True),
        "one_device": (one_device, images, False),
        "data_parallel": (both, images, False),
        "half_batch": (one_device, images[: len(images) // 2], False),
    }
    for name, (distribution, batch, symmetric) in steps.items():
        with distribution.scope():
            np.savez(f"{out_dir}/{name}.npz", **step(initial, batch, symmetric))


if __name__ == "__main__":
    main(*sys.argv[1:])
