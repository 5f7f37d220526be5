"""Export of a trained CARL: the backbone as a plain-TensorFlow SavedModel, the model as .keras.

The SavedModel needs no carl_tf to load (`tf.saved_model.load`); its `serving_default` signature
takes float32 images (N, H, W, 3) in [0, 255] named `images` (normalization is inside) and
returns `{"features": (N, D)}`; `assign` returns `{"probabilities": (N, K)}`. Images of another
shape are refused (InvalidArgumentError naming both shapes); N may be 0.
"""

import os
import shutil

import keras
import tensorflow as tf

from carl_tf.errors import RunDirectoryError
from carl_tf.method.model import CARL


def export_backbone(model: CARL, path: str) -> None:
    """Writes the backbone (and the assignment head as a second signature) as a SavedModel.

    Both signatures refuse images of another shape and answer an empty batch, see `_endpoint`.
    """
    height, width = model.backbone.input_shape[1:3]
    images = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        _endpoint("features", lambda x: model.backbone(x, training=False), images),
        input_signature=[images],
    )
    archive.add_endpoint(
        "assign",
        _endpoint("probabilities", lambda x: model.assign(x, training=False), images),
        input_signature=[images],
    )
    archive.write_out(path, verbose=False)


def _endpoint(name: str, compute, spec: tf.TensorSpec):
    """A signature's body `images -> {name: compute(images)}` that holds to its input spec.

    A SavedModel's signature does not check its inputs against the declared spec: a single
    image (rank 3), another size or one channel would run and return figures of nothing,
    so `tf.ensure_shape` refuses them naming both shapes. A batch of no images would fail deep
    inside BatchNorm and the convolutions, so it gets an empty result of the right width,
    computed on one blank image and cut to none.
    """

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
    extended run's earlier export stays in place until the new one is complete.

    Raises:
        RunDirectoryError: If the disk refuses the write (full, read-only); the run's
            checkpoints are untouched, so rerunning the same command exports again.
    """
    temporary, previous = f"{export_dir}.tmp", f"{export_dir}.previous"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)
    try:
        os.makedirs(temporary)
        export_backbone(model, os.path.join(temporary, "backbone"))
        model.save(os.path.join(temporary, "carl.keras"))
        if os.path.isdir(export_dir):  # an extended run replaces the shorter run's export
            os.replace(export_dir, previous)
        os.replace(temporary, export_dir)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException as error:  # Ctrl-C and SIGTERM too: leave no half-written export
        shutil.rmtree(temporary, ignore_errors=True)
        # TensorFlow reports the SavedModel's failed writes as OpError, not OSError.
        if isinstance(error, (OSError, tf.errors.OpError)):
            raise RunDirectoryError(
                f"cannot write the export {export_dir} ({_reason(error)}); free space on "
                f"{os.path.dirname(export_dir)} or make it writable, then run the same command "
                "to export"
            ) from error
        raise


def _reason(error: Exception) -> str:
    """The first line of an error's message, for a one-line report."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
