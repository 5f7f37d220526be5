"""A `.keras` file written by an earlier carl_tf loads into today's `CARL` with the same weights.

tests/data/carl_v1.keras was saved by the `CARL` of before `carl_tf.method.base` (a small
functional backbone, K = 5, one epoch of `fit`), beside the assignments and features it gave
on four images (carl_v1_expected.npz).
"""

import os

import keras
import numpy as np

import carl_tf

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_a_model_saved_before_the_method_base_loads_and_predicts_the_same():
    model = keras.saving.load_model(os.path.join(DATA, "carl_v1.keras"))
    expected = np.load(os.path.join(DATA, "carl_v1_expected.npz"))
    assert isinstance(model, carl_tf.CARL)
    assert (model.num_prototypes, float(model.kl_weight.numpy())) == (5, 2.5)
    np.testing.assert_allclose(
        model.predict(expected["images"], verbose=0), expected["probabilities"], atol=1e-6
    )
    np.testing.assert_allclose(
        model.backbone(expected["images"], training=False), expected["features"], atol=1e-6
    )
