"""Export of a trained CARL: the backbone as a plain-TensorFlow SavedModel, the model as .keras.

The SavedModel needs no carl_tf to load (`tf.saved_model.load`); its `serving_default` signature
takes float32 images (N, H, W, 3) in [0, 255] named `images` (normalization is inside) and
returns `{"features": (N, D)}`; `assign` returns `{"probabilities": (N, K)}`.
"""

import os
import shutil

import keras
import tensorflow as tf

from carl_tf.method.model import CARL


def export_backbone(model: CARL, path: str) -> None:
    """Writes the backbone (and the assignment head as a second signature) as a SavedModel."""
    height, width = model.backbone.input_shape[1:3]
    images = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda images: {"features": model.backbone(images, training=False)},
        input_signature=[images],
    )
    archive.add_endpoint(
        "assign",
        lambda images: {"probabilities": model.assign(images, training=False)},
        input_signature=[images],
    )
    archive.write_out(path, verbose=False)


def export_run(model: CARL, export_dir: str) -> None:
    """Writes `export_dir/backbone/` and `export_dir/carl.keras`, all or nothing.

    Both are written into a temporary sibling directory that is renamed to `export_dir` once
    complete, so an interrupted export leaves no `export_dir` behind (train.py treats its
    presence as "this run is finished").
    """
    temporary = f"{export_dir}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    export_backbone(model, os.path.join(temporary, "backbone"))
    model.save(os.path.join(temporary, "carl.keras"))
    os.replace(temporary, export_dir)
