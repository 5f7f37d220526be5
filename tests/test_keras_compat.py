"""A `.keras` file written by an earlier carl_tf loads into today's `CARL` with the same weights.

tests/data/carl_v1.keras was saved by the `CARL` of before `carl_tf.method.base` (a small
functional backbone, K = 5, one epoch of `fit`). The expected figures below are what that
`CARL` (commit 417770b) gave for the loaded file on the seeded images of `_images`.
"""

import os

import keras
import numpy as np

import carl_tf

MODEL = os.path.join(os.path.dirname(__file__), "data", "carl_v1.keras")

PROBABILITIES = [
    [0.19590233, 0.18793818, 0.19836509, 0.18272026, 0.2350741],
    [0.19541378, 0.1834339, 0.20245513, 0.1793968, 0.23930044],
    [0.19586195, 0.1849676, 0.20177454, 0.18049605, 0.23689987],
    [0.19633678, 0.18690576, 0.20091766, 0.1823029, 0.233537],
]
FEATURES = [
    [0.01876794, 0.16948473, 0.18233092, 0.68425757],
    [0.04015847, 0.12851371, 0.17866652, 0.68596065],
    [0.02689821, 0.14859952, 0.16157286, 0.69095224],
    [0.01799961, 0.14780834, 0.15136434, 0.6520056],
]


def _images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")


def test_a_model_saved_before_the_method_base_loads_and_predicts_the_same():
    model = keras.saving.load_model(MODEL)
    assert isinstance(model, carl_tf.CARL)
    assert (model.num_prototypes, float(model.kl_weight.numpy())) == (5, 2.5)
    images = _images()
    np.testing.assert_allclose(model.predict(images, verbose=0), PROBABILITIES, atol=1e-6)
    np.testing.assert_allclose(model.backbone(images, training=False), FEATURES, atol=1e-6)
