"""Every image source of train.py and evaluate.py, loaded into one `ImageSource` form.

A source is named by a spec string and loaded once by `load_source`:

* `digits`: scikit-learn's bundled 8x8 handwritten digits, upscaled; the offline default.
* `folder:PATH`: a tree of JPEG/PNG/BMP/GIF files, labelled by class sub-folder if it has any.
* `npz:PATH`: arrays `x` (N, H, W, C) uint8 and optional labels `y` (N,).
* any TFDS name (`cifar10`, `stl10`, `imagenet2012`, ...), read from prepared TFDS data.

`carl_tf.data.pipeline.make_dataset` turns a source into batches of raw `uint8` images and `int32` labels (-1 where
unlabelled). The pipeline only decodes, caches, shuffles, batches and prefetches: augmentation
runs later, on device. Every user-facing failure is a `DataError` with a one-line message that
names the problem and the fix, so the command-line tools can print it without a traceback.

TensorFlow is imported only where a path needs it: digits, npz files and folders held in memory
load without it (decoded with Pillow, resized in NumPy: `carl_tf.data.numpy_images`), as on a
machine with only JAX and Keras; TFDS datasets, streamed folders and the tf.data pipeline need
it, and say so in a one-line `UsageError` where it is missing.
"""

import contextlib
import dataclasses
import logging
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data import numpy_images
from carl_tf.errors import DataError, UsageError

if TYPE_CHECKING:
    import tensorflow as tf
    import tensorflow_datasets as tfds

logger = logging.getLogger(__name__)

# Sources that fit this budget at their final size are held decoded in memory.
DEFAULT_MEMORY_BUDGET_BYTES = 4 << 30
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_LOCAL_SPLITS = ("train", "test", "all")
_DIGITS_DEFAULT_SIZE = 32
# load_digits stores ink as integers 0..16.
_DIGITS_MAX_VALUE = 16.0
# Images per step when decoding or resizing a whole source into memory.
_CHUNK = 512
_ACCEPTED_FORMS = (
    "digits, folder:PATH, npz:PATH, or a TFDS dataset name such as cifar10, stl10 or imagenet2012"
)

# `(count, index)`: the index-th of `count` disjoint equal parts of a source; (1, 0) is all of it.
Shard = tuple[int, int]
# (shuffle, seed, shard) -> unbatched (image uint8 (H, W, 3), label int32) elements.
StreamFn = Callable[..., "tf.data.Dataset"]
# (shuffle, seed, shard) -> unbatched (encoded image file bytes tf.string, label int32) elements.
RecordsFn = Callable[..., "tf.data.Dataset"]


def tensorflow_or_none():
    """TensorFlow, or None where it cannot be imported (a machine with only JAX and Keras)."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def require_tensorflow(message: str):
    """TensorFlow, for a path that cannot work without it.

    Args:
        message: The error's one line where TensorFlow is missing: what needs it and the fix,
            e.g. "a TFDS dataset needs TensorFlow (pip install tensorflow tensorflow-datasets)".

    Raises:
        UsageError: With `message`, where TensorFlow cannot be imported.
    """
    tf = tensorflow_or_none()
    if tf is None:
        raise UsageError(message)
    return tf


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSource:
    """A loaded image source: either decoded arrays in memory or a stream of decoded images.

    Attributes:
        name: The spec the source was loaded from, e.g. `folder:/data/pets`.
        split: The split that was loaded, e.g. `train` or `unlabelled+train`.
        num_examples: Number of images. For a streamed folder this counts files, so it is an
            upper bound when some of them cannot be decoded.
        num_classes: Number of classes, or None when the source has no labels.
        image_shape: `(height, width, 3)` of every image the source yields.
        class_names: Class folder names of a labelled folder, index = label; else None.
        arrays: `(images, labels)` with shapes `(N, H, W, 3)` uint8 and `(N,)` int32 when the
            source is held in memory, else None.
        stream: When `arrays` is None, a function `(shuffle, seed, shard=(1, 0))` returning
            the unbatched `(image, label)` dataset of one part of the source (see
            `shard_elements`), shuffled at file level when asked.
        cache: Whether `make_dataset` may cache the decoded stream in memory.
        records: For sources read from image files (folders, TFDS), a function
            `(shuffle, seed, shard=(1, 0))` returning the unbatched `(encoded, label)` dataset
            of the files' bytes, undecoded, in the same order and parts as `stream`: for views
            cut from the full-resolution images. None for digits and npz sources, and for
            folders loaded without TensorFlow (records are a tf.data dataset), whose views are
            then cut from the images as held.
        native_size: `(height, width)` of the first image before any resizing, or None when
            the source's images differ in size and only decoding each one would tell.
        select: Makes the source of the examples at given indices without decoding the
            others (see `subset`); None for sources held in `arrays`, which are sliced.
        memory_budget_bytes: The budget the source was loaded under; a streamed source's
            shuffle buffer holds at most this many bytes of decoded images.
    """

    name: str
    split: str
    num_examples: int
    num_classes: int | None
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None = None
    arrays: tuple[np.ndarray, np.ndarray] | None = None
    stream: StreamFn | None = None
    cache: bool = False
    records: RecordsFn | None = None
    native_size: tuple[int, int] | None = None
    select: Callable[[np.ndarray], "ImageSource"] | None = None
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES

    def __post_init__(self):
        if (self.arrays is None) == (self.stream is None):
            raise ValueError("An ImageSource needs exactly one of `arrays` and `stream`.")

    def subset(self, indices: np.ndarray) -> "ImageSource":
        """The source of the examples at sorted `indices`, the others never decoded.

        Indices count the source's examples in its unshuffled order (the order of `arrays`,
        of `stream(False, seed)` and of `records(False, seed)`).
        """
        indices = np.asarray(indices, np.int64)
        if self.select is not None:
            return self.select(indices)
        if self.arrays is None:
            raise ValueError(f"{self.description} cannot be cut to a subset")
        images, labels = self.arrays
        return dataclasses.replace(
            self, arrays=(images[indices], labels[indices]), num_examples=len(indices)
        )

    @property
    def description(self) -> str:
        """The name with its split, as used in messages."""
        return f"{self.name} ({self.split} split)"


def shard_elements(
    dataset: "tf.data.Dataset", num_examples: int, shard: Shard
) -> "tf.data.Dataset":
    """Part `index` of `count` of a dataset of `num_examples` elements: elements i with
    i % count == index, the last num_examples % count dropped so that every part has exactly
    num_examples // count elements (workers in lock step make the same number of steps).

    Raises:
        DataError: If the shard is not an index in range, or a part would be empty.
    """
    count, index = shard
    if count < 1 or not 0 <= index < count:
        raise DataError(f"shard {index} of {count} does not exist; pass 0 <= index < count")
    if count == 1:
        return dataset
    if num_examples < count:
        raise DataError(
            f"{num_examples} images cannot be split among {count} input pipelines; use fewer "
            "workers or more images"
        )
    return dataset.take(num_examples - num_examples % count).shard(count, index)


def shard_seed(seed: int, shard: Shard) -> int:
    """The seed of a shuffle that runs after sharding: `seed` itself for the whole source.

    With one seed every part would get the same permutation of its positions, so the images
    at neighbouring positions of the source (often of one class) would always meet in the
    same global batch; the part's index makes each part's order its own.
    """
    if shard == (1, 0):
        return seed
    return int(np.random.SeedSequence([seed, *shard]).generate_state(1)[0])


def splits_by_holdout(spec: str) -> bool:
    """Whether a source has no splits of its own (digits, folders, npz files).

    Its `train` and `test` splits are then cut by the seeded `holdout` fraction; TFDS datasets
    bring their own splits.
    """
    return spec == "digits" or spec.partition(":")[0] in ("folder", "npz")


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
        raise DataError(f"image size must be positive, got {image_size}; fix --image_size")
    kind, _, path = spec.partition(":")
    if spec == "digits":
        return _load_digits(split, image_size, holdout, seed)
    if kind in ("folder", "npz") and not path:
        raise DataError(f"source '{spec}' names no path; use {_ACCEPTED_FORMS}")
    if kind == "folder":
        return _load_folder(
            spec, path, split, image_size, holdout, seed, memory_budget_bytes, hold_in_memory
        )
    if kind == "npz":
        return _load_npz(spec, path, split, image_size, holdout, seed)
    source = _load_tfds(
        spec, split, data_dir, image_size, holdout, seed, download, memory_budget_bytes
    )
    return source if hold_in_memory else dataclasses.replace(source, cache=False)


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, to keep DataError messages on one line."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".:") if lines else type(error).__name__


def _resize(images: "tf.Tensor", size: tuple[int, int]) -> "tf.Tensor":
    """Bilinear resize of one image or a batch to `size`, returned as uint8."""
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    # Rounded to uint8, saturating outside 0..255.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _resize_array(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes `(N, h, w, C)` images (any real dtype, 0..255) to uint8 `(N, *size, C)`.

    With TensorFlow where it is installed; else `numpy_images.resize`, which gives the same
    pixels.
    """
    if images.shape[1:3] == size and images.dtype == np.uint8:
        return images
    with_tensorflow = tensorflow_or_none() is not None
    out = np.empty((len(images), *size, images.shape[-1]), np.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        if with_tensorflow:
            out[start : start + _CHUNK] = _resize(chunk, size).numpy()
        else:
            out[start : start + _CHUNK] = numpy_images.resize(chunk, size)
    return out


def _holdout_indices(
    labels: np.ndarray, split: str, holdout: float, seed: int, description: str
) -> np.ndarray:
    """Indices of `split` under a seeded holdout, stratified by label (-1 counts as a label).

    Args:
        labels: `(N,)` labels, -1 where unlabelled.
        split: `train`, `test` or `all`.
        holdout: Fraction of every label's examples that goes to `test`.
        seed: Seed of the per-label permutations.
        description: Source name for messages.

    Returns:
        Sorted indices of the split's examples.

    Raises:
        DataError: If the split name or holdout is invalid, or the split is empty.
    """
    if split not in _LOCAL_SPLITS:
        raise DataError(
            f"{description} has no split '{split}'; use one of {', '.join(_LOCAL_SPLITS)}"
        )
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout must be in [0, 1), got {holdout}; fix --holdout")
    if split == "all":
        return np.arange(len(labels))
    if split == "test" and holdout == 0.0:
        raise DataError(
            f"{description} has a test split only with a holdout fraction; pass --holdout "
            "(e.g. 0.2) or use split 'all'"
        )
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # Rounding per label keeps every label's share close to `holdout`.
        is_test[rng.permutation(members)[: int(holdout * len(members) + 0.5)]] = True
    indices = np.flatnonzero(is_test if split == "test" else ~is_test)
    if len(indices) == 0:
        raise DataError(
            f"holdout {holdout} leaves {description} with no {split} images; change --holdout"
        )
    return indices


def _num_classes(labels: np.ndarray) -> int | None:
    """Largest label + 1, or None when every label is -1 (unlabelled)."""
    return int(labels.max()) + 1 if labels.size and labels.max() >= 0 else None


def _load_digits(split: str, image_size: int | None, holdout: float, seed: int) -> ImageSource:
    """scikit-learn's 1797 8x8 digits (bundled, offline), upscaled bilinearly and made RGB."""
    from sklearn import datasets as sklearn_datasets  # only the digits source needs it

    digits = sklearn_datasets.load_digits()
    labels = digits.target.astype(np.int32)
    indices = _holdout_indices(labels, split, holdout, seed, "digits")
    size = image_size or _DIGITS_DEFAULT_SIZE
    gray = digits.images[indices, :, :, None] * (255.0 / _DIGITS_MAX_VALUE)
    images = np.repeat(_resize_array(gray, (size, size)), 3, axis=-1)
    return ImageSource(
        name="digits",
        split=split,
        num_examples=len(indices),
        num_classes=10,
        image_shape=(size, size, 3),
        arrays=(images, labels[indices]),
    )


def _load_npz(
    spec: str, path: str, split: str, image_size: int | None, holdout: float, seed: int
) -> ImageSource:
    """Arrays `x` (N, H, W, C) uint8 with C in 1, 3, 4 and optional labels `y` (N,)."""
    # np.load takes any file that is not a zip (text, a .npy) for pickled data and says so.
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise DataError(
            f"{spec} is not an npz archive (not a zip file); pass a .npz file saved with np.savez"
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            keys = list(arrays.files)
            images = arrays["x"] if "x" in keys else None
            labels = arrays["y"] if "y" in keys else None
    except (OSError, ValueError) as error:
        raise DataError(
            f"cannot read {spec}: {_first_line(error)}; pass a .npz file saved with np.savez"
        ) from error
    if images is None:
        raise DataError(
            f"{spec} has no array 'x' (found: {', '.join(keys) or 'none'}); save images as "
            "x (N, H, W, C) uint8 and optional labels as y (N,)"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.dtype != np.uint8:
        raise DataError(
            f"{spec}: x must be uint8 (N, H, W, C) with C in 1, 3 or 4, got {images.dtype} "
            f"{images.shape}; convert it, e.g. x.astype(np.uint8)"
        )
    if labels is None:
        labels = np.full(len(images), -1, np.int32)
    elif (
        labels.shape != (len(images),)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and labels.min() < -1)
    ):
        raise DataError(
            f"{spec}: y must hold {len(images)} integer labels >= -1, got {labels.dtype} "
            f"{labels.shape}; fix y (-1 marks unlabelled images)"
        )
    labels = labels.astype(np.int32)
    indices = _holdout_indices(labels, split, holdout, seed, spec)
    images = images[indices]
    # Grayscale becomes RGB; alpha is dropped, as tf.io.decode_image(channels=3) does.
    images = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]
    height, width = (image_size, image_size) if image_size else images.shape[1:3]
    images = _resize_array(images, (height, width))
    return ImageSource(
        name=spec,
        split=split,
        num_examples=len(indices),
        num_classes=_num_classes(labels),
        image_shape=(height, width, 3),
        arrays=(images, labels[indices]),
    )


def count_images(spec: str) -> tuple[int, int | None]:
    """How many images a `folder:` or `npz:` source holds and its number of classes (None when
    unlabelled), read from the file listing or the npz headers without decoding any image.

    Raises:
        DataError: For a source that is not a folder or npz file, or cannot be read.
    """
    kind, _, path = spec.partition(":")
    if kind == "folder" and path:
        paths, labels, _ = _list_images(spec, path)
        return len(paths), _num_classes(labels)
    if kind == "npz" and path:
        try:
            with zipfile.ZipFile(path) as archive, archive.open("x.npy") as file:
                version = np.lib.format.read_magic(file)
                read = np.lib.format.read_array_header_2_0 if version[0] >= 2 else None
                shape = (read or np.lib.format.read_array_header_1_0)(file)[0]
            with np.load(path, allow_pickle=False) as arrays:
                labels = arrays["y"] if "y" in arrays.files else np.full(shape[0], -1)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(
                f"cannot read {spec}: {_first_line(error)}; pass a .npz file saved with "
                "np.savez holding x (N, H, W, C) uint8 and optional labels y (N,)"
            ) from error
        return int(shape[0]), _num_classes(np.asarray(labels))
    raise DataError(f"cannot count the images of {spec}; only folder:PATH and npz:PATH")


def _list_images(spec: str, root: str) -> tuple[list[str], np.ndarray, tuple[str, ...] | None]:
    """Lists the image files under `root`, labelled by class sub-folder when there are any.

    Symbolic links are followed, but each real directory is walked once per class folder and
    each real file listed once, so a link loop (`a/self -> .`) cannot multiply the images.

    Returns:
        Sorted file paths, their labels (-1 when unlabelled) and the class names or None.

    Raises:
        DataError: If `root` is missing, holds no images, mixes loose images with class
            folders, or reaches one file from two class folders (its label is ambiguous).
    """
    if not os.path.isdir(root):
        raise DataError(f"{spec}: no such directory; pass an existing folder as folder:PATH")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    loose = [
        os.path.join(root, e)
        for e in entries
        if e.lower().endswith(_IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, e))
    ]
    labelled = {}  # (st_dev, st_ino) of each file listed -> (class folder, path)
    classes = {
        e: files
        for e in entries
        if os.path.isdir(os.path.join(root, e))
        and (files := _class_images(spec, e, os.path.join(root, e), labelled))
    }
    if not classes:
        if not loose:
            raise DataError(
                f"{spec} holds no JPEG, PNG, BMP or GIF images; point folder:PATH at an image "
                "folder"
            )
        return loose, np.full(len(loose), -1, np.int32), None
    if loose:
        raise DataError(
            f"{spec} mixes {len(loose)} loose images with class folders; move them into a "
            "class folder or remove them"
        )
    paths = [p for files in classes.values() for p in files]
    labels = np.concatenate(
        [np.full(len(files), i, np.int32) for i, files in enumerate(classes.values())]
    )
    return paths, labels, tuple(classes)


def _identity(path: str) -> tuple[int, int]:
    """The (device, inode) that names the real file or directory behind `path` and its links."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _class_images(
    spec: str, label: str, directory: str, labelled: dict[tuple[int, int], tuple[str, str]]
) -> list[str]:
    """The image files under one class folder, each real directory and file taken once.

    Args:
        spec: The source's spec, for messages.
        label: The class folder's name.
        directory: Its path.
        labelled: (device, inode) of every file listed so far, shared by all class folders,
            mapped to its class folder and path; updated with this folder's files.

    Raises:
        DataError: If a file here is the same real file as one listed under another class.
    """
    found = []
    walked = {_identity(directory)}
    for parent, dirs, files in os.walk(directory, followlinks=True):
        # Hidden folders are tool state (.ipynb_checkpoints, .cache), not data; a directory
        # already walked (a link loop, or two links to one folder) is not walked again.
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            identity = _identity(os.path.join(parent, name))
            if identity not in walked:
                walked.add(identity)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(_IMAGE_EXTENSIONS):
                continue
            path = os.path.join(parent, name)
            try:
                identity = _identity(path)
            except OSError:  # a dangling link: listed, and reported as undecodable when read
                found.append(path)
                continue
            if identity in labelled:
                other_label, other = labelled[identity]
                if other_label != label:
                    raise DataError(
                        f"{spec}: {path} is the same file as {other}, so it has two labels "
                        f"({other_label!r} and {label!r}); remove one of the links"
                    )
                continue  # the same image linked twice in one class counts once
            labelled[identity] = (label, path)
            found.append(path)
    return found


def _os_names(paths: list[str]) -> list[bytes]:
    """The paths as the bytes the filesystem holds, for tf.data to open.

    `os.listdir` gives a name that is not valid UTF-8 (b"\\xff.png") as a str with surrogate
    escapes ("\\udcff.png"), which TensorFlow refuses to convert ("Error converting unicode
    string"); its bytes open the file like any other.
    """
    return [os.fsencode(path) for path in paths]


def _decode(encoded: "tf.Tensor") -> "tf.Tensor":
    import tensorflow as tf

    # channels=3 turns grayscale and RGBA into RGB; GIFs give their first frame.
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def _decode_to_size(encoded: "tf.Tensor", size: tuple[int, int]) -> tuple["tf.Tensor", "tf.Tensor"]:
    """Decodes an image file's bytes and resizes the image to `size` if needed.

    Returns:
        The image uint8 `(*size, 3)` and whether its original size differed from `size`.
    """
    import tensorflow as tf

    image = _decode(encoded)
    differs = tf.reduce_any(tf.shape(image)[:2] != size)
    image = tf.cond(differs, lambda: _resize(image, size), lambda: image)
    image.set_shape((*size, 3))
    return image, differs


def _first_image_size(paths: list[str]) -> tuple[int, int] | None:
    """The size of the first file that decodes, or None when none does."""
    tf = tensorflow_or_none()
    if tf is None:
        for path in paths:
            image = numpy_images.decode_file(path)
            if image is not None:
                return image.shape[0], image.shape[1]
        return None
    sizes = (
        tf.data.Dataset.from_tensor_slices(tf.constant(_os_names(paths), tf.string))
        .map(lambda path: tf.shape(_decode(tf.io.read_file(path)))[:2])
        .ignore_errors()
        .take(1)
    )
    for size in sizes.as_numpy_iterator():
        return int(size[0]), int(size[1])
    return None


def _file_records(paths: list[str], labels: np.ndarray) -> RecordsFn:
    """`records(shuffle, seed, shard)` of image files: their bytes, read only for the shard.

    The file list is sharded before it is shuffled, so each input pipeline opens only its own
    files, and shuffled with the seed and the part's index (`shard_seed`), so every epoch's
    order is fixed by them.
    """
    names = _os_names(paths)

    def records(shuffle: bool, seed: int, shard: Shard = (1, 0)) -> "tf.data.Dataset":
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices((tf.constant(names, tf.string), labels))
        files = shard_elements(files, len(names), shard)
        if shuffle:
            files = files.shuffle(
                len(names), shard_seed(seed, shard), reshuffle_each_iteration=True
            )
        return files.map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return records


def _load_folder(
    spec: str,
    root: str,
    split: str,
    image_size: int | None,
    holdout: float,
    seed: int,
    memory_budget_bytes: int,
    hold_in_memory: bool,
) -> ImageSource:
    """A folder of images, decoded into memory when it fits the budget (and may), else streamed."""
    all_paths, all_labels, class_names = _list_images(spec, root)
    indices = _holdout_indices(all_labels, split, holdout, seed, spec)
    # The whole folder's first image, so that train and test splits agree.
    native_size = _first_image_size(all_paths)
    if native_size is None:
        raise DataError(
            f"none of the {len(all_paths)} image files in {spec} can be decoded; "
            "check that they are valid JPEG, PNG, BMP or GIF files"
        )
    folder = _Folder(
        spec=spec,
        split=split,
        class_names=class_names,
        size=(image_size, image_size) if image_size else native_size,
        native_size=native_size,
        one_size=not image_size,
        memory_budget_bytes=memory_budget_bytes,
    )
    paths, labels = [all_paths[i] for i in indices], all_labels[indices]
    if not hold_in_memory:
        require_tensorflow(
            f"streaming {folder.description} from disk (hold_in_memory=False) needs "
            "TensorFlow (pip install tensorflow)"
        )
        return folder.streamed(paths, labels)
    if len(paths) * int(np.prod(folder.image_shape)) > memory_budget_bytes:
        budget_mb = f"{memory_budget_bytes / (1 << 20):.2f}".rstrip("0").rstrip(".")
        needed_mb = len(paths) * int(np.prod(folder.image_shape)) / (1 << 20)
        require_tensorflow(
            f"{folder.description}: {len(paths)} images of {folder.size[0]}x{folder.size[1]} "
            f"({needed_mb:.3g} MiB) do not fit the memory budget (--config.memory_budget_mb="
            f"{memory_budget_bytes / (1 << 20):.3g}), and streaming them needs TensorFlow (pip "
            "install tensorflow); install it or raise the budget"
        )
        logger.warning(
            "%s: %d images of %dx%d do not fit the %s MiB memory budget, so they are "
            "streamed from disk; files that cannot be decoded are skipped as they are read.",
            folder.description,
            len(paths),
            *folder.size,
            budget_mb,
        )
        return folder.streamed(paths, labels)
    return folder.in_memory(paths, labels)


@dataclasses.dataclass(frozen=True)
class _Folder:
    """What every split and subset of one image folder shares, and how each is made."""

    spec: str
    split: str
    class_names: tuple[str, ...] | None
    size: tuple[int, int]
    native_size: tuple[int, int]
    one_size: bool  # no --image_size: every image must have the first one's size
    memory_budget_bytes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.size, 3)

    @property
    def description(self) -> str:
        return f"{self.spec} ({self.split} split)"

    def _source(self, **fields) -> ImageSource:
        return ImageSource(
            name=self.spec,
            split=self.split,
            num_classes=len(self.class_names) if self.class_names else None,
            image_shape=self.image_shape,
            class_names=self.class_names,
            native_size=self.native_size,
            memory_budget_bytes=self.memory_budget_bytes,
            **fields,
        )

    def streamed(self, paths: list[str], labels: np.ndarray) -> ImageSource:
        """The files decoded as they are read, each resized to `size`."""
        records = _file_records(paths, labels)

        def stream(shuffle: bool, seed: int, shard: Shard = (1, 0)) -> "tf.data.Dataset":
            import tensorflow as tf

            return (
                records(shuffle, seed, shard)
                .map(
                    lambda encoded, label: (_decode_to_size(encoded, self.size)[0], label),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
                .ignore_errors(log_warning=True)
            )

        return self._source(
            num_examples=len(paths),
            stream=stream,
            records=records,
            select=lambda keep: self.streamed([paths[i] for i in keep], labels[keep]),
        )

    def in_memory(self, paths: list[str], labels: np.ndarray) -> ImageSource:
        """The files decoded into memory now; those that do not decode are dropped."""
        images, labels, kept, any_resized = _decode_all(paths, labels, self.size)
        if any_resized and self.one_size:
            raise DataError(
                f"the images in {self.spec} differ in size (the first is {self.size[0]}x"
                f"{self.size[1]}); pass --image_size to resize them to one size"
            )
        skipped = sorted(set(range(len(paths))) - set(kept.tolist()))
        if skipped:
            logger.warning(
                "%s: skipped %d of %d image files that could not be decoded (truncated, damaged "
                "or not an image): %s",
                self.description,
                len(skipped),
                len(paths),
                _some_names([paths[i] for i in skipped]),
            )
        if not len(images):
            raise DataError(
                f"none of the {len(paths)} image files in {self.description} can be decoded; "
                "check that they are valid JPEG, PNG, BMP or GIF files"
            )
        return self._held(images, labels, [paths[i] for i in kept])

    def _held(self, images: np.ndarray, labels: np.ndarray, paths: list[str]) -> ImageSource:
        """Decoded `images` of the files `paths`, which their records read again.

        Without TensorFlow there are no records (a tf.data dataset): views are cut from the
        images as held.
        """
        with_tensorflow = tensorflow_or_none() is not None
        return self._source(
            num_examples=len(images),
            arrays=(images, labels),
            records=_file_records(paths, labels) if with_tensorflow else None,
            select=lambda keep: self._held(images[keep], labels[keep], [paths[i] for i in keep]),
        )


def _some_names(paths: list[str], most: int = 5) -> str:
    """`a.jpg, b.jpg and 3 more`: the first `most` paths, then how many are left."""
    named = ", ".join(paths[:most])
    return f"{named} and {len(paths) - most} more" if len(paths) > most else named


# What the image libraries print on their own for a damaged file (libjpeg's "Improper call to
# JPEG library in state 201", "Premature end of JPEG file", libpng's warnings): the log names
# the file instead.
_DECODER_NOISE = re.compile(r"JPEG|libpng|PNG|GIF")


@contextlib.contextmanager
def _decoder_messages_replaced() -> Iterator[None]:
    """Holds back the image libraries' own stderr lines while files decode.

    fd 2 goes to a temporary file; afterwards every captured line is written back except the
    decoders' messages about damaged files, which the caller's warning replaces by naming the
    files.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _DECODER_NOISE.search(line))
            if kept:
                os.write(2, kept.encode())


def _decode_all(
    paths: list[str], labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Decodes files in parallel into memory, dropping those that fail to decode.

    With TensorFlow where it is installed; else with Pillow (`_decode_all_without_tensorflow`).

    Returns:
        Images `(M, *size, 3)` uint8, labels `(M,)` int32 and indices into `paths` `(M,)` of
        the M decodable files, in file order, and whether any image had to be resized.
    """
    tf = tensorflow_or_none()
    if tf is None:
        return _decode_all_without_tensorflow(paths, labels, size)
    decoded = (
        tf.data.Dataset.from_tensor_slices(
            (tf.constant(_os_names(paths), tf.string), labels, np.arange(len(paths)))
        )
        .map(
            lambda path, label, index: (
                *_decode_to_size(tf.io.read_file(path), size),
                label,
                index,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()
        .batch(_CHUNK)
    )
    images = np.empty((len(paths), *size, 3), np.uint8)
    kept_labels = np.empty(len(paths), np.int32)
    kept = np.empty(len(paths), np.int64)
    count, any_resized = 0, False
    with _decoder_messages_replaced():
        for image_batch, resized, label_batch, index_batch in decoded.as_numpy_iterator():
            images[count : count + len(image_batch)] = image_batch
            kept_labels[count : count + len(image_batch)] = label_batch
            kept[count : count + len(image_batch)] = index_batch
            count += len(image_batch)
            any_resized |= bool(resized.any())
    return images[:count], kept_labels[:count], kept[:count], any_resized


def _decode_all_without_tensorflow(
    paths: list[str], labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """`_decode_all` with Pillow and NumPy (`numpy_images`), `_CHUNK` files at a time.

    Each image is resized on its own to `size` if it differs, as the TensorFlow path does.
    """
    images = np.empty((len(paths), *size, 3), np.uint8)
    kept = []
    any_resized = False
    for start in range(0, len(paths), _CHUNK):
        decoded = numpy_images.decode_files(paths[start : start + _CHUNK])
        for index, image in enumerate(decoded, start):
            if image is None:
                continue
            if image.shape[:2] != size:
                image = numpy_images.resize(image, size)
                any_resized = True
            images[len(kept)] = image
            kept.append(index)
    kept = np.asarray(kept, np.int64)
    return images[: len(kept)], labels[kept].astype(np.int32), kept, any_resized


def _load_tfds(
    name: str,
    split: str,
    data_dir: str | None,
    image_size: int | None,
    holdout: float,
    seed: int,
    download: bool,
    memory_budget_bytes: int,
) -> ImageSource:
    """A prepared TFDS dataset split, cached in memory when it fits the budget.

    With a `holdout`, `train` and `test` are the two parts of the dataset's train split (its
    own test split is not read), cut by `seed` as a folder's images are.
    """
    tf = require_tensorflow(
        f"source '{name}' is read as a TFDS dataset, which needs TensorFlow (pip install "
        "tensorflow tensorflow-datasets); without it use digits, folder:PATH or npz:PATH"
    )
    import tensorflow_datasets as tfds  # heavy; only TFDS sources need it

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise DataError(f"unknown source '{name}'; use {_ACCEPTED_FORMS}") from error
    except Exception as error:  # tfds raises many types for malformed names or configs.
        raise DataError(
            f"cannot open '{name}' as a TFDS dataset: {_first_line(error)}; use {_ACCEPTED_FORMS}"
        ) from error
    if holdout and split not in ("train", "test"):
        raise DataError(
            f"with a holdout, the splits of TFDS dataset {name} are 'train' and 'test', the two "
            f"parts of its train split; split '{split}' needs --holdout 0"
        )
    where = builder.data_dir_root
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"TFDS dataset {name} is not prepared in {where} and downloading is off; pass "
                f"--data_dir pointing at prepared TFDS data (run `tfds build {name}` on a "
                "machine with internet) or pass --download"
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # Network, disk and manual-download errors alike.
            raise DataError(
                f"could not download and prepare TFDS dataset {name} into {where}: "
                f"{_first_line(error)}; run `tfds build {name}` on a machine with internet "
                "and pass its data directory as --data_dir"
            ) from error
    info = builder.info
    # A holdout is carved from the train split as from a folder's images: the same seeded,
    # per-label fractions (`_holdout_indices`), over the records in file order.
    part, split = (split, "train") if holdout else (None, split)
    try:
        num_examples = info.splits[split].num_examples
    except (KeyError, ValueError) as error:
        raise DataError(
            f"TFDS dataset {name} has no split '{split}' (available: "
            f"{', '.join(info.splits)}); '+' joins splits, e.g. unlabelled+train"
        ) from error
    image_key, label_key = _tfds_keys(name, info)
    if part is not None and label_key is None:
        raise DataError(
            f"TFDS dataset {name} has no labels to hold out a stratified split by; pass --holdout 0"
        )
    image_feature = info.features[image_key]
    height, width, channels = image_feature.shape
    if image_size:
        size = (image_size, image_size)
    elif height and width:
        size = (height, width)
    else:
        raise DataError(f"the images of TFDS dataset {name} differ in size; pass --image_size")

    def label_of(features: dict) -> tf.Tensor:
        return tf.cast(features[label_key], tf.int32) if label_key else tf.constant(-1)

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        image = image_feature.decode_example(encoded)
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels != 3:
            image = image[..., :3]
        if (height, width) != size:
            image = _resize(image, size)
        image.set_shape((*size, 3))
        return image

    def source(keep: np.ndarray | None) -> ImageSource:
        count = num_examples if keep is None else len(keep)
        if keep is not None:
            chosen = np.zeros(num_examples, bool)
            chosen[keep] = True

        def records(shuffle: bool, seed: int, shard: Shard = (1, 0)) -> tf.data.Dataset:
            # make_dataset caches and shuffles itself; tfds's auto-cache would double memory.
            # A subset is read in file order, as its indices count examples in that order.
            dataset = builder.as_dataset(
                split=split,
                shuffle_files=shuffle and keep is None,
                read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
                decoders={image_key: tfds.decode.SkipDecoding()},
            ).map(lambda features: (features[image_key], label_of(features)))
            if keep is not None:
                dataset = dataset.enumerate().filter(lambda i, _: tf.gather(chosen, i))
                dataset = dataset.map(lambda _, record: record)
            # Every pipeline reads the records in the same (seeded) order and decodes its share.
            return shard_elements(dataset, count, shard)

        def stream(shuffle: bool, seed: int, shard: Shard = (1, 0)) -> tf.data.Dataset:
            return records(shuffle, seed, shard).map(
                lambda encoded, label: (decode(encoded), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )

        return ImageSource(
            name=name,
            split=part or split,
            num_examples=count,
            num_classes=info.features[label_key].num_classes if label_key else None,
            image_shape=(*size, 3),
            stream=stream,
            cache=count * size[0] * size[1] * 3 <= memory_budget_bytes,
            records=records,
            native_size=(height, width) if height and width else None,
            memory_budget_bytes=memory_budget_bytes,
            select=lambda indices: source(indices if keep is None else keep[indices]),
        )

    if part is None:
        return source(None)
    labels = np.concatenate(
        list(
            builder.as_dataset(
                split="train", shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
            )
            .map(lambda features: tf.cast(features[label_key], tf.int32))
            .batch(8192)
            .as_numpy_iterator()
        )
    )
    keep = _holdout_indices(labels, part, holdout, seed, f"{name} (train split)")
    return source(keep)


def _tfds_keys(name: str, info: "tfds.core.DatasetInfo") -> tuple[str, str | None]:
    """The image feature and the class-label feature (None if absent) of a TFDS dataset."""
    import tensorflow_datasets as tfds

    features = info.features
    keys = info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        image_key, label_key = "image", "label"
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        raise DataError(
            f"TFDS dataset {name} has no image feature '{image_key}'; use an image "
            "classification dataset"
        )
    if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
        label_key = None
    return image_key, label_key
