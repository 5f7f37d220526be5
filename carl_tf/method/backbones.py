"""ResNet backbones that map raw images to pooled feature vectors.

The backbones follow He et al., "Deep Residual Learning for Image Recognition"
(arXiv 1512.03385): BasicBlock for ResNet-18/34 and Bottleneck (expansion 4,
stride on the 3x3 conv as in torchvision's "v1.5") for ResNet-50. Each model is
a Keras functional model that

* takes raw float images in [0, 255] of shape `(batch, H, W, 3)`,
* normalizes them with the ImageNet mean and std inside the model, so exported
  backbones need no separate preprocessing,
* returns globally average-pooled features of shape `(batch, feature_dim)`.

`keras:NAME` wraps any `keras.applications` constructor (e.g. `keras:MobileNetV3Small`) the same
way: fresh weights (`weights=None`), the application's own `preprocess_input` inside the model,
average-pooled features in float32 (`keras_application`).

Example:
    >>> backbone = build_backbone("resnet18", width=16, image_size=32)
    >>> feature_dim(backbone)
    128
"""

import difflib
import importlib
from collections.abc import Callable

import keras

from carl_tf.errors import UsageError
from carl_tf.method.normalization import NormFactory, batch_norm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
_STEMS = ("auto", "cifar", "imagenet")
# Below this side length the ImageNet stem's 4x downsampling leaves too little
# resolution for the four stages (32 px would reach stage 4 at 1x1).
_AUTO_STEM_MIN_IMAGENET_SIZE = 96
_BOTTLENECK_EXPANSION = 4


def _conv(filters: int, kernel_size: int, stride: int, name: str) -> keras.layers.Conv2D:
    # No bias: the following BatchNormalization has its own offset (beta).
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _norm(norm_layer: NormFactory, name: str, zero_gamma: bool = False) -> keras.layers.Layer:
    return norm_layer(name=name, gamma_initializer="zeros" if zero_gamma else "ones")


def _shortcut(
    x: keras.KerasTensor, filters: int, stride: int, norm_layer: NormFactory, name: str
) -> keras.KerasTensor:
    """Identity, or a strided 1x1 projection when the shape changes."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    if stride > 1:
        # Subsample, then a stride-1 1x1 conv: the same function as a strided 1x1 conv, which
        # TensorFlow 2.21's oneDNN kernels crash on (SIGSEGV/abort) for odd batch sizes on CPU.
        x = keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_shortcut_subsample")(x)
    x = _conv(filters, 1, 1, f"{name}_shortcut_conv")(x)
    return _norm(norm_layer, f"{name}_shortcut_bn")(x)


def _basic_block(
    x: keras.KerasTensor, filters: int, stride: int, norm_layer: NormFactory, name: str
) -> keras.KerasTensor:
    """Two 3x3 convs; output has `filters` channels."""
    shortcut = _shortcut(x, filters, stride, norm_layer, name)
    y = _conv(filters, 3, stride, f"{name}_conv1")(x)
    y = _norm(norm_layer, f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    # Zero gamma makes every residual branch start at 0, so each block starts as
    # the identity and the deep net trains like a shallow one at first (Goyal et
    # al., arXiv 1706.02677, Sec. 5.1).
    y = _norm(norm_layer, f"{name}_bn2", zero_gamma=True)(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(
    x: keras.KerasTensor, filters: int, stride: int, norm_layer: NormFactory, name: str
) -> keras.KerasTensor:
    """1x1 reduce, 3x3 (strided), 1x1 expand; output has `4 * filters` channels."""
    shortcut = _shortcut(x, filters * _BOTTLENECK_EXPANSION, stride, norm_layer, name)
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = _norm(norm_layer, f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, stride, f"{name}_conv2")(y)
    y = _norm(norm_layer, f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters * _BOTTLENECK_EXPANSION, 1, 1, f"{name}_conv3")(y)
    # Zero gamma: each block starts as the identity (see _basic_block).
    y = _norm(norm_layer, f"{name}_bn3", zero_gamma=True)(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _resolve_stem(stem: str, image_size: int | None) -> str:
    if stem not in _STEMS:
        raise ValueError(f"Unknown stem {stem!r}; expected one of: {', '.join(_STEMS)}.")
    if stem != "auto":
        return stem
    if image_size is None:
        raise ValueError('stem="auto" needs image_size; pass it or choose "cifar"/"imagenet".')
    return "cifar" if image_size < _AUTO_STEM_MIN_IMAGENET_SIZE else "imagenet"


def resnet(
    depth: int,
    *,
    width: int = 64,
    stem: str = "auto",
    image_size: int | None = None,
    norm_layer: NormFactory | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds a ResNet feature extractor (no classifier).

    Args:
        depth: 18 or 34 (BasicBlock) or 50 (Bottleneck).
        width: Channels of the first stage; stages have width, 2w, 4w, 8w
            (times 4 at the output of each Bottleneck). 64 is the standard net.
        stem: "cifar" (3x3 conv, stride 1, no pooling) for small images,
            "imagenet" (7x7 conv stride 2, then 3x3 max-pool stride 2), or
            "auto": "cifar" if `image_size` < 96 else "imagenet".
        image_size: Side length of the square input images, or None to accept
            any size (then `stem` must not be "auto").
        norm_layer: Factory of the normalization layers (see
            `carl_tf.method.normalization.batch_norm`); the default is synchronized
            BatchNorm with PyTorch's momentum and epsilon, on the fused kernel where it
            computes the same, so a multi-replica step equals a single-device one.
        name: Model name; defaults to f"resnet{depth}".

    Returns:
        A functional model mapping float images in [0, 255] of shape
        `(batch, image_size, image_size, 3)` to features of shape
        `(batch, feature_dim)`, with feature_dim = 8 * width for depth 18/34
        and 32 * width for depth 50.

    Raises:
        ValueError: For an unsupported depth or stem, a non-positive width, or
            stem="auto" without image_size.
    """
    if depth not in _STAGE_BLOCKS:
        raise ValueError(
            f"Unsupported ResNet depth {depth}; expected one of: "
            f"{', '.join(map(str, _STAGE_BLOCKS))}."
        )
    if width < 1:
        raise ValueError(f"width must be positive, got {width}.")
    stem = _resolve_stem(stem, image_size)
    norm_layer = norm_layer or batch_norm()
    block: Callable[..., keras.KerasTensor] = _basic_block if depth < 50 else _bottleneck_block

    side = image_size  # None keeps the spatial dims dynamic.
    images = keras.Input(shape=(side, side, 3), dtype="float32", name="images")
    # One layer for both steps: (x / 255 - mean) / std == (x - 255 mean) / (255 std).
    x = keras.layers.Normalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
        name="normalize",
    )(images)

    if stem == "cifar":
        x = _conv(width, 3, 1, "stem_conv")(x)
    else:
        x = _conv(width, 7, 2, "stem_conv")(x)
    x = _norm(norm_layer, "stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem == "imagenet":
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    for stage, num_blocks in enumerate(_STAGE_BLOCKS[depth], start=1):
        filters = width * 2 ** (stage - 1)
        for index in range(1, num_blocks + 1):
            # Downsample at the first block of every stage but the first.
            stride = 2 if stage > 1 and index == 1 else 1
            x = block(x, filters, stride, norm_layer, f"stage{stage}_block{index}")

    # Pooled in float32 under every policy: features leave the backbone (kNN, export) in float32.
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    return keras.Model(images, features, name=name or f"resnet{depth}")


def resnet18(**kwargs) -> keras.Model:
    """ResNet-18; keyword arguments as in `resnet`."""
    return resnet(18, **kwargs)


def resnet34(**kwargs) -> keras.Model:
    """ResNet-34; keyword arguments as in `resnet`."""
    return resnet(34, **kwargs)


def resnet50(**kwargs) -> keras.Model:
    """ResNet-50; keyword arguments as in `resnet`."""
    return resnet(50, **kwargs)


BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
# `keras:NAME` names the `keras.applications` constructor NAME.
KERAS_PREFIX = "keras:"


def keras_applications() -> list[str]:
    """The `keras.applications` constructors this Keras has, e.g. `MobileNetV3Small`."""
    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def _application(name: str) -> Callable[..., keras.Model]:
    """The constructor `keras.applications.NAME`.

    Raises:
        UsageError: If this Keras has no such application, naming the nearest ones.
    """
    known = keras_applications()
    if name not in known:
        nearest = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(KERAS_PREFIX + n for n in nearest)}? " if nearest else ""
        raise UsageError(
            f"keras.applications has no {name!r}; {hint}backbone must be one of "
            f"{', '.join(BACKBONES)} or keras:NAME with NAME one of {', '.join(known)}"
        )
    return getattr(keras.applications, name)


@keras.saving.register_keras_serializable(package="carl_tf")
class ApplicationPreprocess(keras.layers.Layer):
    """The `preprocess_input` of a `keras.applications` model, as a layer a `.keras` file names.

    Maps float images in [0, 255] to the input the application expects (scaled to [-1, 1],
    caffe's BGR mean subtraction, or unchanged for the applications that rescale inside).

    Args:
        application: Name of the `keras.applications` constructor, e.g. `MobileNetV3Small`.
        **kwargs: Base `keras.layers.Layer` arguments.
    """

    def __init__(self, application: str, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        module = importlib.import_module(_application(application).__module__)
        self._preprocess = module.preprocess_input

    def call(self, images):
        return self._preprocess(images)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "application": self.application}


def keras_application(name: str, *, image_size: int) -> keras.Model:
    """A `keras.applications` model as a backbone: fresh weights, its own preprocessing.

    The application's batch normalization keeps its own settings (momentum 0.99, not
    synchronized across replicas), so its moving statistics lag the training batches over the
    first epochs more than the built-in ResNets' (momentum 0.9); the inference-mode figures of
    a short run (the kNN monitor, `val_prototypes_in_use`) read lower until they catch up.

    Args:
        name: The constructor's name in `keras.applications`, e.g. `MobileNetV3Small`.
        image_size: Side length of the square input images; most applications need 32 or more.

    Returns:
        A functional model mapping float images in [0, 255] of shape
        `(batch, image_size, image_size, 3)` to average-pooled features `(batch, D)` in float32.

    Raises:
        UsageError: For a name `keras.applications` lacks, or an image size it refuses.
    """
    constructor = _application(name)
    images = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="images")
    preprocessed = ApplicationPreprocess(name, name="preprocess")(images)
    try:
        network = constructor(
            include_top=False,
            weights=None,
            input_tensor=preprocessed,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except ValueError as error:  # e.g. "Input size must be at least 32x32"
        raise UsageError(
            f"keras.applications.{name} cannot take {image_size}x{image_size} images: {error}"
        ) from error
    # Features leave the backbone (kNN, export) in float32 under every policy.
    features = keras.layers.Activation("linear", dtype="float32", name="features")(network.output)
    return keras.Model(images, features, name=name.lower())


def build_backbone(
    name: str,
    *,
    width: int = 64,
    image_size: int = 32,
    norm_layer: NormFactory | None = None,
) -> keras.Model:
    """Builds a backbone by config name, with the stem chosen from `image_size`.

    Args:
        name: "resnet18", "resnet34", "resnet50", or `keras:NAME` for the
            `keras.applications` constructor NAME (see `keras_application`).
        width: Base channel count (see `resnet`); not used by `keras:` backbones.
        image_size: Side length of the square input images.
        norm_layer: Factory of the normalization layers (see `resnet`); `keras:` backbones
            keep their own batch normalization.

    Returns:
        The backbone model, images `(batch, image_size, image_size, 3)` in
        [0, 255] to features `(batch, feature_dim)`.

    Raises:
        UsageError: If `name` is not a known backbone (a `ValueError`).
    """
    if name.startswith(KERAS_PREFIX):
        if norm_layer is not None:
            raise ValueError(f"{name} keeps its own batch normalization; pass no norm_layer")
        return keras_application(name[len(KERAS_PREFIX) :], image_size=image_size)
    if name not in BACKBONES:
        raise UsageError(
            f"Unknown backbone {name!r}; expected one of: {', '.join(BACKBONES)}, or "
            "keras:NAME for a keras.applications constructor (e.g. keras:MobileNetV3Small)."
        )
    return BACKBONES[name](
        width=width,
        stem="auto",
        image_size=image_size,
        norm_layer=norm_layer,
    )


def feature_dim(backbone: keras.Model) -> int:
    """Returns D, the size of the backbone's `(batch, D)` output."""
    return int(backbone.output.shape[-1])
