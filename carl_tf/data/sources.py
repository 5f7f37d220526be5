"""Every image source of train.py and evaluate.py, named by a spec string and loaded by `get`.

* `digits`: scikit-learn's bundled 8x8 handwritten digits, upscaled; the offline default
  (`carl_tf.data.digits`).
* `folder:PATH`: a tree of JPEG/PNG/BMP/GIF files, labelled by class sub-folder if it has any
  (`carl_tf.data.folders`).
* `npz:PATH`: arrays `x` (N, H, W, C) uint8 and optional labels `y` (N,) (`carl_tf.data.npz`).
* any TFDS name (`cifar10`, `stl10`, `imagenet2012`, ...), read from prepared TFDS data
  (`carl_tf.data.tfds`).

Each kind is a module with a `load(spec, options)` function returning one `ImageSource`;
`carl_tf.data.pipeline.make_dataset` turns a source into batches of raw `uint8` images and
`int32` labels (-1 where unlabelled). Every user-facing failure is a `DataError` with a one-line
message that names the problem and the fix, so the command-line tools can print it without a
traceback.

TensorFlow is imported only where a path needs it: digits, npz files and folders held in memory
load without it (decoded with Pillow, resized in NumPy: `carl_tf.data.numpy_images`), as on a
machine with only JAX and Keras; TFDS datasets, streamed folders and the tf.data pipeline need
it, and say so in a one-line `UsageError` where it is missing.
"""

from collections.abc import Callable

from carl_tf.data import digits, folders, npz, tfds
from carl_tf.data.image_source import (
    ACCEPTED_FORMS,
    DEFAULT_MEMORY_BUDGET_BYTES,
    ImageSource,
    LoadOptions,
)
from carl_tf.errors import DataError

Loader = Callable[[str, LoadOptions], ImageSource]
# The kinds named by a `kind:PATH` spec; any other spec is a TFDS name.
_PATH_KINDS = {"folder": folders, "npz": npz}


def get(spec: str) -> Loader:
    """The `load(spec, options)` function of the kind of source `spec` names.

    Raises:
        DataError: If a `folder:` or `npz:` spec names no path.
    """
    if spec == "digits":
        return digits.load
    kind, _, path = spec.partition(":")
    if kind in _PATH_KINDS:
        if not path:
            raise DataError(f"source '{spec}' names no path; use {ACCEPTED_FORMS}")
        return _PATH_KINDS[kind].load
    return tfds.load


def load_source(
    spec: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
    image_size: int | None = None,
    holdout: float = 0.0,
    seed: int = 0,
    download: bool = False,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    hold_in_memory: bool = True,
) -> ImageSource:
    """Loads an image source named by `spec`.

    Args:
        spec: `digits`, `folder:PATH`, `npz:PATH` or a TFDS name (optionally `name/config`).
        split: For TFDS, any TFDS split expression, with `+` joining splits
            (`unlabelled+train`). For the other sources `train`, `test` (the held-out
            fraction) or `all`.
        data_dir: TFDS data directory; None uses the TFDS default.
        image_size: Side of the square images to resize to. None keeps the source's size:
            32 for digits, the first image's size for a folder (a folder held in memory must
            then have images of one size; a streamed one is resized to the first's size).
        holdout: Fraction of a digits/folder/npz source held out as its `test` split,
            stratified by label and fixed by `seed`; 0 makes `train` everything.
        seed: Seed of the holdout split.
        download: Whether TFDS may download and prepare a dataset missing from `data_dir`.
        memory_budget_bytes: Largest decoded size held in memory; larger folders and TFDS
            splits are streamed from disk, through a shuffle buffer of at most this size.
        hold_in_memory: False streams folders and TFDS splits whatever their size, e.g. when
            only their records (the undecoded files) will be read.

    Returns:
        The loaded `ImageSource`.

    Raises:
        DataError: If the source cannot be found, read or split as asked.
    """
    if image_size is not None and image_size < 1:
        raise DataError(f"image size must be positive, got {image_size}", fields=("image_size",))
    options = LoadOptions(
        split=split,
        data_dir=data_dir,
        image_size=image_size,
        holdout=holdout,
        seed=seed,
        download=download,
        memory_budget_bytes=memory_budget_bytes,
        hold_in_memory=hold_in_memory,
    )
    return get(spec)(spec, options)


def splits_by_holdout(spec: str) -> bool:
    """Whether a source has no splits of its own (digits, folders, npz files).

    Its `train` and `test` splits are then cut by the seeded `holdout` fraction; TFDS datasets
    bring their own splits.
    """
    return spec == "digits" or spec.partition(":")[0] in _PATH_KINDS


def count_images(spec: str) -> tuple[int, int | None]:
    """How many images a `folder:` or `npz:` source holds and its number of classes (None when
    unlabelled), read from the file listing or the npz headers without decoding any image.

    Raises:
        DataError: For a source that is not a folder or npz file, or cannot be read.
    """
    kind, _, path = spec.partition(":")
    if kind in _PATH_KINDS and path:
        return _PATH_KINDS[kind].count(spec)
    raise DataError(f"cannot count the images of {spec}; only folder:PATH and npz:PATH")
