"""Mixed precision and XLA: CARL trains under every `--precision` and with `--jit_compile`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from jax_support import requires_jax, run_under_jax

from carl_tf import CARL
from carl_tf.method.backbones import build_backbone
from carl_tf.run import precision
from carl_tf.run.precision import PRECISIONS, cpu_flags, resolve_precision, set_precision

IMAGE_SIZE = 16


@pytest.fixture(autouse=True)
def _restore_float32():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def narrow_carl() -> CARL:
    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    return CARL(backbone, num_prototypes=10, projection_hidden_units=(32,), projection_dim=16)


def images(seed: int, batch: int = 32) -> np.ndarray:
    shape = (batch, IMAGE_SIZE, IMAGE_SIZE, 3)
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def test_unknown_precision_lists_the_choices():
    with pytest.raises(ValueError, match=", ".join(PRECISIONS)):
        set_precision("float8")


@pytest.mark.parametrize(
    "strategy, gpus, flags, policy",
    [
        ("default", [], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),  # Zen 4/5, Cooper Lake
        ("default", [], {"avx512f", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),  # Sapphire Rapids
        ("default", [], {"avx2", "avx512f"}, "float32"),  # bfloat16 only emulated
        ("default", [], set(), "float32"),  # no /proc/cpuinfo: macOS, Windows
        ("mirrored", [(9, 0), (9, 0)], set(), "mixed_bfloat16"),  # H100/H200
        ("default", [(8, 0)], set(), "mixed_bfloat16"),  # A100
        ("default", [(7, 5)], {"avx512_bf16"}, "mixed_float16"),  # T4: float16 tensor cores
        ("mirrored", [(8, 6), (7, 0)], set(), "mixed_float16"),  # the slowest GPU decides
        ("default", [(6, 0)], {"avx512_bf16"}, "float32"),  # P100: no tensor cores
        ("tpu", [], set(), "mixed_bfloat16"),  # the TPU's native type
    ],
)
def test_auto_picks_the_policy_the_hardware_computes_natively(strategy, gpus, flags, policy):
    assert resolve_precision("auto", strategy=strategy, gpus=gpus, flags=flags) == policy


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_kept_whatever_the_hardware(name):
    assert resolve_precision(name, strategy="tpu", gpus=[], flags={"avx512_bf16"}) == name
    assert resolve_precision(name, gpus=[(9, 0)] * 4, flags=set()) == name


def test_cpu_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512_bf16 sse\n\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "avx512_bf16", "sse"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_backbone_features_are_float32_under_bfloat16():
    set_precision("mixed_bfloat16")
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    assert backbone.get_layer("stage4_block2_conv2").compute_dtype == "bfloat16"
    assert backbone(images(0).astype("float32")).dtype == tf.float32


@pytest.mark.parametrize(
    "name, compute_dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_fit_keeps_float32_loss_and_weights(name, compute_dtype):
    assert set_precision(name).name == name
    model = narrow_carl()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    # Only float16 needs loss scaling; compile adds it.
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (name == "mixed_float16")
    assert model.backbone.get_layer("stem_conv").compute_dtype == compute_dtype
    assert {w.dtype for w in model.weights} == {"float32"}
    start = [np.array(w) for w in model.trainable_weights]

    view_a, view_b = (model.augmenter(images(seed), training=True) for seed in (0, 1))
    figures = model._objective(view_a, view_b, training=False)
    assert {name: v.dtype for name, v in figures.items()} == dict.fromkeys(figures, tf.float32)

    dataset = tf.data.Dataset.from_tensor_slices(images(2, batch=64)).batch(32)
    history = model.fit(dataset, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    assert model.predict(images(3), verbose=0).dtype == np.float32
    trained = [np.array(w) for w in model.trainable_weights]
    assert all(np.isfinite(w).all() for w in trained)
    assert sum(not np.allclose(w, w0) for w, w0 in zip(trained, start)) > len(start) // 2


def test_a_bfloat16_model_loads_as_it_trained_under_a_float32_policy(tmp_path):
    set_precision("mixed_bfloat16")
    model = narrow_carl()
    expected = model.predict(images(6), verbose=0)
    model.save(tmp_path / "carl.keras")
    keras.mixed_precision.set_dtype_policy("float32")  # e.g. evaluate.py, a user's notebook
    loaded = keras.saving.load_model(tmp_path / "carl.keras")
    for layer in (loaded.projection_head, *loaded.projection_head.hidden_layers, loaded.assigner):
        assert layer.compute_dtype == "bfloat16", layer.name
    np.testing.assert_allclose(loaded.predict(images(6), verbose=0), expected, atol=1e-6)


def test_xla_train_step_equals_the_graph_step():
    views = tuple(tf.cast(images(seed), tf.float32) for seed in (4, 5))
    dataset = tf.data.Dataset.from_tensor_slices(views).batch(16)
    weights = {}
    for jit_compile in (False, True):
        model = narrow_carl()
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit_compile)
        assert model.jit_compile is jit_compile
        model.fit(dataset, epochs=2, verbose=0)
        weights[jit_compile] = model.get_weights()
    for got, want in zip(weights[True], weights[False]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_jax_compute_capability_strings():
    assert precision._capability("9.0") == (9, 0)
    assert precision._capability("7.5") == (7, 5)
    assert precision._capability(None) == (0, 0) and precision._capability("sm_90") == (0, 0)


@pytest.mark.slow
@requires_jax
def test_auto_precision_under_jax_without_tensorflow():
    """JAX lists the devices (no GPUs here), the CPU flags decide as under TensorFlow."""
    code = (
        "from carl_tf.run import precision as p; "
        "print(p.gpu_compute_capabilities(), p.resolve_precision('auto'))"
    )
    result = run_under_jax(["-c", code], without_tensorflow=True)
    expected = resolve_precision("auto", gpus=[])
    assert result.stdout.split() == ["[]", expected]
