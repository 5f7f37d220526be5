"""The CARL objective against independent NumPy computations and hand-computed cases."""

import numpy as np
import pytest
from keras import ops

from carl_tf.method import losses


def _random_probs(rng, batch, k):
    logits = rng.normal(size=(batch, k)) * 3
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np(x):
    return float(ops.convert_to_numpy(x))


def test_consistency_matches_numpy():
    rng = np.random.default_rng(0)
    p_a, p_b = _random_probs(rng, 64, 10), _random_probs(rng, 64, 10)
    expected = -np.mean(np.log(np.einsum("bk,bk->b", p_a, p_b)))
    assert _np(losses.consistency_loss(p_a, p_b)) == pytest.approx(expected, rel=1e-5)


def test_kl_matches_numpy_definition():
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, 32, 7)
    p_hat = probs.mean(axis=0)
    expected = np.sum(p_hat * np.log(p_hat / (1.0 / 7)))  # KL(p_hat || U), natural log
    assert _np(losses.kl_to_uniform(probs)) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_equal_one_hot_views_have_zero_consistency():
    one_hot = np.eye(5, dtype="float32")[[0, 3, 3, 1]]
    assert _np(losses.consistency_loss(one_hot, one_hot)) == pytest.approx(0.0, abs=1e-7)


def test_disagreeing_one_hot_views_are_finite():
    a = np.eye(4, dtype="float32")[[0, 1]]
    b = np.eye(4, dtype="float32")[[2, 3]]
    value = _np(losses.consistency_loss(a, b))
    assert np.isfinite(value)
    assert value == pytest.approx(-np.log(np.finfo(np.float32).eps), rel=1e-6)


def test_uniform_batch_mean_has_zero_kl():
    # Rows are one-hot but the batch mean is exactly uniform.
    assert _np(losses.kl_to_uniform(np.eye(8, dtype="float32"))) == pytest.approx(0.0, abs=1e-6)


def test_collapsed_batch_has_kl_log_k():
    collapsed = np.tile(np.eye(10, dtype="float32")[[4]], (16, 1))
    assert _np(losses.kl_to_uniform(collapsed)) == pytest.approx(np.log(10), rel=1e-6)


def test_total_loss_is_eq7():
    assert _np(losses.carl_loss(1.5, 0.25, 4.0)) == pytest.approx(2.5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    rng = np.random.default_rng(2)
    p_a, p_b = _random_probs(rng, 16, 6), _random_probs(rng, 16, 6)
    low_a, low_b = ops.cast(p_a, dtype), ops.cast(p_b, dtype)
    consistency = losses.consistency_loss(low_a, low_b)
    kl = losses.kl_to_uniform(low_a)
    assert consistency.dtype == "float32" and kl.dtype == "float32"
    # The only error left is the inputs' rounding, not float16 arithmetic in the sum or log.
    a32, b32 = (
        ops.convert_to_numpy(ops.cast(low_a, "float32")),
        ops.convert_to_numpy(ops.cast(low_b, "float32")),
    )
    expected = -np.mean(np.log(np.einsum("bk,bk->b", a32, b32)))
    assert _np(consistency) == pytest.approx(expected, rel=1e-5)


def test_near_zero_inputs_stay_finite():
    tiny = np.full((3, 4), 1e-30, dtype="float32")
    tiny[:, 0] = 1.0
    assert np.isfinite(_np(losses.consistency_loss(tiny, np.roll(tiny, 1, axis=1))))
    assert np.isfinite(_np(losses.kl_to_uniform(tiny)))
