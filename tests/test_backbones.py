"""Tests for carl_tf.backbones: shapes, stems, parameter count, preprocessing, saving."""

import keras
import numpy as np
import pytest

from carl_tf.errors import UsageError
from carl_tf.method import backbones
from carl_tf.method.normalization import FusedBatchNormalization, batch_norm

WIDTH = 8  # Narrow nets keep every test CPU-cheap.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def small_resnet18() -> keras.Model:
    return backbones.resnet18(width=WIDTH, stem="cifar", image_size=32)


@pytest.mark.parametrize(
    "depth, expected_dim", [(18, 8 * WIDTH), (34, 8 * WIDTH), (50, 32 * WIDTH)]
)
@pytest.mark.parametrize("stem, size", [("cifar", 32), ("imagenet", 96)])
def test_output_shape_and_feature_dim(depth, expected_dim, stem, size):
    model = backbones.resnet(depth, width=WIDTH, stem=stem, image_size=size)
    features = model(_images(2, size), training=False)
    assert tuple(features.shape) == (2, expected_dim)
    assert backbones.feature_dim(model) == expected_dim
    assert model.name == f"resnet{depth}"


def test_cifar_stem_keeps_resolution(small_resnet18):
    assert small_resnet18.get_layer("stem_conv").kernel.shape == (3, 3, 3, WIDTH)
    assert tuple(small_resnet18.get_layer("stem_relu").output.shape) == (None, 32, 32, WIDTH)
    assert tuple(small_resnet18.get_layer("stage1_block2_out").output.shape) == (
        None,
        32,
        32,
        WIDTH,
    )
    # Stages 2-4 halve the resolution each: 32 / 8 = 4.
    assert tuple(small_resnet18.get_layer("stage4_block2_out").output.shape) == (
        None,
        4,
        4,
        8 * WIDTH,
    )
    assert "stem_pool" not in [layer.name for layer in small_resnet18.layers]


def test_imagenet_stem_downsamples_by_four():
    model = backbones.resnet18(width=WIDTH, stem="imagenet", image_size=96)
    assert model.get_layer("stem_conv").kernel.shape == (7, 7, 3, WIDTH)
    assert tuple(model.get_layer("stem_relu").output.shape) == (None, 48, 48, WIDTH)
    assert tuple(model.get_layer("stem_pool").output.shape) == (None, 24, 24, WIDTH)
    assert tuple(model.get_layer("stage1_block2_out").output.shape) == (None, 24, 24, WIDTH)
    assert tuple(model.get_layer("stage4_block2_out").output.shape) == (None, 3, 3, 8 * WIDTH)


@pytest.mark.parametrize("size, kernel", [(32, 3), (95, 3), (96, 7)])
def test_auto_stem_choice(size, kernel):
    model = backbones.resnet18(width=WIDTH, stem="auto", image_size=size)
    assert model.get_layer("stem_conv").kernel.shape[0] == kernel
    has_pool = "stem_pool" in [layer.name for layer in model.layers]
    assert has_pool == (kernel == 7)


def test_build_backbone_uses_auto_stem():
    model = backbones.build_backbone("resnet34", width=WIDTH, image_size=32)
    assert model.name == "resnet34"
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert model.get_layer("stem_conv").kernel.shape[0] == 3
    assert backbones.feature_dim(model) == 8 * WIDTH


def _resnet18_cifar_param_counts(width: int) -> tuple[int, int]:
    """(trainable, non-trainable) counts of a ResNet-18 with 3x3 stem and no fc.

    Every conv is bias-free and followed by BN, whose gamma/beta are trainable and
    moving mean/variance are not.
    """

    def conv_bn(kernel: int, c_in: int, c_out: int) -> tuple[int, int]:
        return kernel * kernel * c_in * c_out + 2 * c_out, 2 * c_out

    parts = [conv_bn(3, 3, width)]
    c_in = width
    for stage in range(4):
        c_out = width * 2**stage
        for block in range(2):
            parts += [conv_bn(3, c_in, c_out), conv_bn(3, c_out, c_out)]
            if block == 0 and stage > 0:  # Strided projection shortcut.
                parts.append(conv_bn(1, c_in, c_out))
            c_in = c_out
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _count(weights: list[keras.Variable]) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def test_resnet18_parameter_count():
    trainable, non_trainable = _resnet18_cifar_param_counts(64)
    # Cross-check the formula against torchvision's published ResNet-18 count,
    # 11,689,512: minus the fc layer (512 * 1000 + 1000) and minus the 7x7 stem
    # conv (3 * 64 * 49) in favour of the 3x3 one (3 * 64 * 9).
    assert trainable == 11_689_512 - (512 * 1000 + 1000) - 3 * 64 * (49 - 9) == 11_168_832

    model = backbones.resnet18(width=64, stem="cifar", image_size=32)
    assert _count(model.trainable_weights) == trainable
    assert _count(model.non_trainable_weights) == non_trainable


def test_normalization_inside_model(small_resnet18):
    normalize = keras.Model(small_resnet18.input, small_resnet18.get_layer("normalize").output)
    mean_image = np.broadcast_to(IMAGENET_MEAN * 255.0, (1, 32, 32, 3))
    np.testing.assert_allclose(normalize(mean_image), 0.0, atol=1e-5)

    black = np.zeros((1, 32, 32, 3), np.float32)
    expected = np.broadcast_to(-IMAGENET_MEAN / IMAGENET_STD, (1, 32, 32, 3))
    np.testing.assert_allclose(normalize(black), expected, rtol=1e-6)


def test_integer_images_are_cast_and_any_size_accepted():
    model = backbones.resnet18(width=WIDTH, stem="cifar")
    assert tuple(model.input.shape) == (None, None, None, 3)
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        model(images, training=False), model(images.astype(np.float32), training=False)
    )


def _randomize_batchnorm(model: keras.Model, seed: int) -> None:
    """Moves BN weights off their initial values so saving them is tested too."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.1, channels))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels))


def test_keras_save_load_round_trip(tmp_path):
    model = backbones.resnet18(width=WIDTH, stem="cifar", image_size=32)
    _randomize_batchnorm(model, seed=0)
    images = _images(4, 32, seed=2)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    # Guard against a trivial pass: features must differ across images.
    assert np.ptp(expected, axis=0).max() > 1e-3

    path = tmp_path / "backbone.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.name == "resnet18"
    np.testing.assert_array_equal(restored(images, training=False), expected)
    assert all(
        layer.synchronized
        for layer in restored.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_unknown_backbone_name_raises():
    with pytest.raises(ValueError, match=r"'vit_b16'.*resnet18, resnet34, resnet50"):
        backbones.build_backbone("vit_b16")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 101, "stem": "cifar"}, "depth 101"),
        ({"depth": 18, "stem": "tiny"}, "auto, cifar, imagenet"),
        ({"depth": 18, "stem": "auto"}, "image_size"),
        ({"depth": 18, "stem": "cifar", "width": 0}, "width"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        backbones.resnet(**kwargs)


def test_default_norm_layer_is_synchronized_fused_batchnorm_with_pytorch_defaults():
    model = backbones.resnet18(width=WIDTH, stem="cifar")
    batch_norms = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    # Stem + 2 per block x 8 blocks + 3 projection shortcuts.
    assert len(batch_norms) == 1 + 16 + 3
    assert all(layer.synchronized for layer in batch_norms)
    assert all(isinstance(layer, FusedBatchNormalization) for layer in batch_norms)
    assert all(layer.momentum == 0.9 and layer.epsilon == 1e-5 for layer in batch_norms)


@pytest.mark.parametrize("synchronized", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_norm_layer_factory_reaches_every_normalization(synchronized, fused):
    model = backbones.resnet18(
        width=WIDTH, stem="cifar", norm_layer=batch_norm(synchronized=synchronized, fused=fused)
    )
    batch_norms = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) == 1 + 16 + 3
    assert all(layer.synchronized == synchronized for layer in batch_norms)
    assert all(isinstance(layer, FusedBatchNormalization) == fused for layer in batch_norms)
    # The zero-gamma residual ends keep their initializer through the factory.
    zero = [layer for layer in batch_norms if layer.name.endswith("_bn2")]
    assert zero and all(not np.any(layer.gamma.numpy()) for layer in zero)


def test_a_norm_layer_of_another_kind():
    model = backbones.resnet18(
        width=WIDTH, stem="cifar", image_size=32, norm_layer=keras.layers.LayerNormalization
    )
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert sum(isinstance(layer, keras.layers.LayerNormalization) for layer in model.layers) == 20


def test_last_batchnorm_of_each_block_starts_at_zero(small_resnet18):
    for stage in range(1, 5):
        for block in (1, 2):
            name = f"stage{stage}_block{block}"
            last_gamma = small_resnet18.get_layer(f"{name}_bn2").gamma.numpy()
            first_gamma = small_resnet18.get_layer(f"{name}_bn1").gamma.numpy()
            np.testing.assert_array_equal(last_gamma, 0.0)
            np.testing.assert_array_equal(first_gamma, 1.0)


def test_odd_batch_trains():
    """A strided 1x1 conv crashed TensorFlow 2.21's oneDNN backprop at odd batch sizes."""
    model = keras.Sequential([backbones.resnet18(width=4, image_size=32), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    history = model.fit(images, np.zeros((5, 2)), batch_size=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_keras_application_is_a_backbone_behind_its_own_preprocessing(tmp_path):
    backbone = backbones.build_backbone("keras:MobileNetV3Small", image_size=32)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    features = backbone(images, training=False)
    assert features.shape == (2, backbones.feature_dim(backbone)) and features.dtype == "float32"
    assert backbone.get_layer("preprocess").application == "MobileNetV3Small"
    path = str(tmp_path / "mobilenet.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored(images, training=False), features)


def test_an_unknown_keras_application_names_the_nearest_and_what_is_accepted():
    with pytest.raises(
        UsageError, match=r"no 'MobileNetV3Smal'; did you mean keras:MobileNetV3Small"
    ):
        backbones.build_backbone("keras:MobileNetV3Smal")
    with pytest.raises(UsageError, match=r"cannot take 16x16 images"):
        backbones.build_backbone("keras:MobileNetV3Small", image_size=16)
