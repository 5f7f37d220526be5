"""Export of a trained model (CARL or SimCLR): the backbone as a plain-TensorFlow SavedModel, the
model as .keras.

The SavedModel needs no carl_tf to load (`tf.saved_model.load`); its `serving_default` signature
takes float32 images (N, H, W, 3) in [0, 255] named `images` (normalization is inside) and
returns `{"features": (N, D)}`; a CARL's `assign` returns `{"probabilities": (N, K)}`. Images of
another
shape are refused (InvalidArgumentError naming both shapes); N may be 0.

A SavedModel is TensorFlow's format, so writing one needs TensorFlow installed, under either
backend: under JAX, Keras converts the model's computation with jax2tf. Where TensorFlow is
missing, `export_run` writes only the `.keras` file (which loads under every backend) and says so
in one logged line.
"""

import logging
import os
import shutil
from typing import TYPE_CHECKING

import keras

from carl_tf.errors import RunDirectoryError, UsageError
from carl_tf.method.base import TwoViewModel
from carl_tf.method.model import CARL

if TYPE_CHECKING:  # TensorFlow is imported where a SavedModel is written, if installed
    import tensorflow as tf

logger = logging.getLogger(__name__)


def export_backbone(model: TwoViewModel, path: str) -> None:
    """Writes a model's backbone, and a CARL's assigner as a second signature, as a SavedModel.

    The same export as a train.py run's `export/backbone/`, for a model trained with your own
    `fit`: plain TensorFlow serves it without carl_tf. `serving_default` maps float32 images
    `images` (N, H, W, 3) in [0, 255] to `{"features": (N, D)}`, `assign` to
    `{"probabilities": (N, K)}` (a `carl_tf.SimCLR` has no assigner, so no `assign`). Both refuse images of another shape and answer an empty batch,
    see `_endpoint`. Under the JAX backend the two computations are converted by
    `keras.export.ExportArchive` (jax2tf) first and the checks wrapped around them in
    TensorFlow (`_jax_saved_model`).

    Args:
        model: A `carl_tf.CARL` or `carl_tf.SimCLR` whose backbone takes images of a fixed size.
        path: The SavedModel directory to write.

    Raises:
        UsageError: For a model that is neither, a backbone without a fixed input
            size, or a machine without TensorFlow (a SavedModel is TensorFlow's format).

    Example:
        carl_tf.export_backbone(model, "exported")
        served = tf.saved_model.load("exported")
        features = served.signatures["serving_default"](images=batch)["features"]
    """
    if not isinstance(model, TwoViewModel):
        raise UsageError(
            f"export_backbone takes a carl_tf.CARL or SimCLR, got {type(model).__name__}; for a bare "
            "Keras backbone use keras.export.ExportArchive or model.export"
        )
    height, width = model.backbone.input_shape[1:3]
    if height is None or width is None:
        raise UsageError(
            "the backbone takes images of any size; build it with a fixed input shape, e.g. "
            "keras.Input((32, 32, 3)), so the SavedModel's signatures can state it"
        )
    if not tensorflow_installed():
        raise UsageError("writing a SavedModel needs TensorFlow; pip install tensorflow")
    import tensorflow as tf

    images = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")
    computations = {"features": lambda x: model.backbone(x, training=False)}
    if isinstance(model, CARL):
        computations["probabilities"] = lambda x: model.assign(x, training=False)
    if keras.backend.backend() == "jax":
        _jax_saved_model(model, computations, images, path)
        return
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, output in _signatures(computations):
        archive.add_endpoint(
            name, _endpoint(output, computations[output], images), input_signature=[images]
        )
    archive.write_out(path, verbose=False)


# Signature name -> the name of its one output.
SIGNATURES = {"serving_default": "features", "assign": "probabilities"}


def _signatures(computations: dict) -> list[tuple[str, str]]:
    """The (signature, output) pairs of `SIGNATURES` whose output the model computes."""
    return [(name, output) for name, output in SIGNATURES.items() if output in computations]


def _jax_saved_model(model: CARL, computations: dict, spec, path: str) -> None:
    """Writes the SavedModel of `export_backbone` from a model on the JAX backend.

    `ExportArchive` converts each computation to a TensorFlow function of TensorFlow copies of
    the model's weights (jax2tf). The checks of `_endpoint` are TensorFlow ops, which jax2tf
    cannot trace, so they wrap the converted functions instead of being part of them; the
    archive would also make every converted function a signature of its own, so the SavedModel
    is written from a `tf.Module` holding the weights those functions read, with the two
    checked signatures.
    """
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    module = tf.Module()
    weights = {}
    signatures = {}
    for name, output in _signatures(computations):
        converted = archive.add_endpoint(output, computations[output], input_signature=[spec])
        for variable in converted.get_concrete_function().variables:
            weights[variable.ref()] = variable
        signatures[name] = tf.function(
            _endpoint(output, converted, spec), input_signature=[spec], autograph=False
        )
    module.weights = [ref.deref() for ref in weights]
    tf.saved_model.save(module, path, signatures=signatures)


def _endpoint(name: str, compute, spec: "tf.TensorSpec"):
    """A signature's body `images -> {name: compute(images)}` that holds to its input spec.

    A SavedModel's signature does not check its inputs against the declared spec: a single
    image (rank 3), another size or one channel would run and return figures of nothing,
    so `tf.ensure_shape` refuses them naming both shapes. A batch of no images would fail deep
    inside BatchNorm and the convolutions, so it gets an empty result of the right width,
    computed on one blank image and cut to none.
    """
    import tensorflow as tf

    def body(images):
        images = tf.ensure_shape(images, spec.shape)
        blank = tf.zeros((1, *spec.shape[1:]), spec.dtype)
        return {
            name: tf.cond(
                tf.shape(images)[0] > 0, lambda: compute(images), lambda: compute(blank)[:0]
            )
        }

    return body


def export_run(model: CARL, export_dir: str) -> None:
    """Writes `export_dir/backbone/` and `export_dir/carl.keras`, all or nothing.

    Both are written into a temporary sibling directory that is renamed to `export_dir` once
    complete, so an interrupted export leaves no `export_dir` behind (train.py treats its
    presence as "this run is finished"). The temporary directory is removed on any failure. An
    extended run's earlier export stays in place until the new one is complete. Without
    TensorFlow there is no `backbone/`: one line is logged and `carl.keras` alone is the export.

    Raises:
        RunDirectoryError: If the disk refuses the write (full, read-only); the run's
            checkpoints are untouched, so rerunning the same command exports again.
    """
    temporary, previous = f"{export_dir}.tmp", f"{export_dir}.previous"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)
    try:
        os.makedirs(temporary)
        if tensorflow_installed():
            export_backbone(model, os.path.join(temporary, "backbone"))
        else:
            logger.info(
                "no SavedModel of the backbone: writing one needs TensorFlow, which is not "
                "installed; export/carl.keras holds the model"
            )
        model.save(os.path.join(temporary, "carl.keras"))
        if os.path.isdir(export_dir):  # an extended run replaces the shorter run's export
            os.replace(export_dir, previous)
        os.replace(temporary, export_dir)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException as error:  # Ctrl-C and SIGTERM too: leave no half-written export
        shutil.rmtree(temporary, ignore_errors=True)
        # TensorFlow reports the SavedModel's failed writes as OpError, not OSError.
        if isinstance(error, (OSError, *_op_errors())):
            raise RunDirectoryError(
                f"cannot write the export {export_dir} ({_reason(error)}); free space on "
                f"{os.path.dirname(export_dir)} or make it writable, then run the same command "
                "to export"
            ) from error
        raise


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (a JAX-only machine has none)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _op_errors() -> tuple[type, ...]:
    """TensorFlow's OpError where TensorFlow is installed, else none."""
    if not tensorflow_installed():
        return ()
    import tensorflow as tf

    return (tf.errors.OpError,)


def _reason(error: Exception) -> str:
    """The first line of an error's message, for a one-line report."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
