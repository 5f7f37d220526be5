"""Embeddings of a folder of images: one row per file, its features and its prototype.

`carl_tf.embed_images(model, images, output)` and `carl-embed` write, for every image file
under a folder (sub-folders included, in sorted order), the backbone's features and, for a
model with an assigner, the prototype it is assigned to and that prototype's probability. The
files are decoded, resized to the model's input and embedded a batch at a time; a CSV is
written as it goes, so memory holds one batch, and an NPZ holds the features of every image.
A file that cannot be decoded is named in one logged line and left out.

The module loads TensorFlow only once it embeds, so `carl-embed` checks its paths first.
"""

import csv
import dataclasses
import logging
import os

import numpy as np

from carl_tf.errors import UsageError

logger = logging.getLogger(__name__)

FORMATS = (".csv", ".npz")
# The extensions the folder sources read (carl_tf.data.folder_listing.IMAGE_EXTENSIONS); a copy,
# as importing carl_tf.data loads Keras before carl-embed has checked its paths.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class EmbedResult:
    """What `embed_images` wrote.

    Attributes:
        output: The CSV or NPZ file, absolute.
        num_images: Rows written: the files that decoded.
        skipped: The files that could not be decoded, relative to the folder.
        dimension: D, the features per image.
        num_prototypes: K, or None for a model without an assigner (no prototype columns).
    """

    output: str
    num_images: int
    skipped: tuple[str, ...]
    dimension: int
    num_prototypes: int | None


def check_paths(images: str, output: str) -> list[str]:
    """The image files under `images`, relative and sorted, after checking both paths.

    Raises:
        UsageError: For a folder that does not exist or holds no image file, an output whose
            extension is not .csv or .npz, or an output directory that does not exist.
    """
    if not os.path.isdir(images):
        raise UsageError(
            f"{images}: no such folder",
            "pass a folder of image files as images",
            fields=("images",),
        )
    if os.path.splitext(output)[1].lower() not in FORMATS:
        raise UsageError(f"{output}: the output must end in .csv or .npz")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"{directory}: no such folder for the output; create it first")
    files = sorted(
        os.path.relpath(os.path.join(root, name), images)
        for root, folders, names in os.walk(images)
        for name in names
        if not name.startswith(".") and name.lower().endswith(_IMAGE_EXTENSIONS)
    )
    if not files:
        raise UsageError(
            f"{images} holds no image file ({', '.join(_IMAGE_EXTENSIONS)}), sub-folders included"
        )
    return files


def embed_images(model, images: str, output: str, *, batch_size: int = 256) -> EmbedResult:
    """Writes the features (and prototype assignment) of every image file under a folder.

    Args:
        model: A train.py workdir, an exported SavedModel or a `.keras` file (what
            `carl_tf.load_model` takes), its result, a `carl_tf.CARL`, or a Keras backbone
            (features only).
        images: A folder; its image files (JPEG, PNG, BMP, GIF), sub-folders included, are
            resized to the model's input size. Pixels are passed in [0, 255].
        output: A `.csv` file (columns `file`, then `prototype` and `probability` for a model
            with an assigner, then `f0` ... `f{D-1}`), written a batch at a time, or a `.npz`
            file (`files` (N,), `features` (N, D) float32, and `prototypes` (N,) int64 and
            `probabilities` (N,) float32 for a model with an assigner).
        batch_size: Files decoded and embedded at a time.

    Returns:
        What was written.

    Raises:
        UsageError: For a path that cannot work (see `check_paths`), a model that takes
            images of any size (resize them yourself and call the backbone), no decodable
            file, or a `batch_size` below 1.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    files = check_paths(images, output)
    from carl_tf.data import numpy_images
    from carl_tf.evaluation.loading import load_model

    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    backbone, assigner, num_prototypes = _parts(model)
    size = tuple(backbone.input_shape[1:3])
    if None in size:
        raise UsageError(
            "the model takes images of any size, so there is no size to resize the files to; "
            "embed with a model of a fixed input size (every carl_tf run has one)"
        )
    npz = output.lower().endswith(".npz")
    temporary = f"{output}.tmp"
    kept, skipped, parts = [], [], {"features": [], "prototypes": [], "probabilities": []}
    dimension = None
    try:
        with open(temporary, "w", newline="", encoding="utf-8") as text:
            writer = csv.writer(text)
            for start in range(0, len(files), batch_size):
                names = files[start : start + batch_size]
                decoded = numpy_images.decode_files([os.path.join(images, n) for n in names])
                batch, batch_names = [], []
                for name, image in zip(names, decoded):
                    if image is None:
                        logger.warning("skipped %s: not a readable JPEG, PNG, BMP or GIF", name)
                        skipped.append(name)
                        continue
                    if image.shape[:2] != size:
                        image = numpy_images.resize(image, size)
                    batch.append(image)
                    batch_names.append(name)
                if not batch:
                    continue
                pixels = np.stack(batch).astype(np.float32)
                features = np.asarray(backbone(pixels, training=False), np.float32)
                rows = [batch_names]
                if assigner is not None:
                    probabilities = np.asarray(assigner(pixels, training=False))
                    prototypes = probabilities.argmax(axis=1)
                    best = probabilities[np.arange(len(prototypes)), prototypes]
                    rows += [prototypes.tolist(), [f"{p:.6g}" for p in best]]
                    parts["prototypes"].append(prototypes)
                    parts["probabilities"].append(best.astype(np.float32))
                if dimension is None:
                    dimension = features.shape[1]
                    if not npz:
                        assigned = ["prototype", "probability"] if len(rows) > 1 else []
                        header = ["file", *assigned, *(f"f{i}" for i in range(dimension))]
                        writer.writerow(header)
                if npz:
                    parts["features"].append(features)
                else:
                    for *leading, vector in zip(*rows, features):
                        writer.writerow([*leading, *(f"{v:.7g}" for v in vector)])
                kept += batch_names
                logger.info("embedded %d of %d files", start + len(names), len(files))
        if not kept:
            raise UsageError(
                f"none of the {len(files)} image files in {images} can be decoded; check that "
                "they are valid JPEG, PNG, BMP or GIF files"
            )
        if npz:
            arrays = {"files": np.asarray(kept), "features": np.concatenate(parts["features"])}
            if parts["prototypes"]:
                arrays["prototypes"] = np.concatenate(parts["prototypes"])
                arrays["probabilities"] = np.concatenate(parts["probabilities"])
            with open(temporary, "wb") as file:
                np.savez(file, **arrays)
        os.replace(temporary, output)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return EmbedResult(
        output=os.path.abspath(output),
        num_images=len(kept),
        skipped=tuple(skipped),
        dimension=int(dimension),
        num_prototypes=num_prototypes,
    )


def _parts(model) -> tuple:
    """The backbone, the assigner (or None) and K (or None) of a loaded model, a `CARL` or a
    bare Keras backbone."""
    from carl_tf.method.model import CARL

    if isinstance(model, CARL):
        return model.backbone, model, model.num_prototypes
    if hasattr(model, "backbone") and hasattr(model, "assigner"):  # a LoadedModel
        return model.backbone, model.assigner, model.num_prototypes
    return model, None, None
