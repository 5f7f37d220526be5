"""`ImageSource`: the one form every kind of source is loaded into, and the options it is loaded by.

Each kind of source is a module with a `load(spec, options) -> ImageSource` function
(`carl_tf.data.digits`, `.npz`, `.folders`, `.tfds`); `carl_tf.data.sources.get` picks the one a
spec names. Everything downstream (`carl_tf.data.pipeline`, the training views, the kNN monitor,
evaluation) reads only the `ImageSource`.
"""

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data.splits import check_batch_size

if TYPE_CHECKING:
    import tensorflow as tf

# Sources that fit this budget at their final size are held decoded in memory.
DEFAULT_MEMORY_BUDGET_BYTES = 4 << 30
# Images per step when a whole source is decoded, resized or read into memory.
CHUNK = 512
ACCEPTED_FORMS = (
    "digits, folder:PATH, npz:PATH, or a TFDS dataset name such as cifar10, stl10 or imagenet2012"
)

# (shuffle, seed, shard) -> unbatched (image uint8 (H, W, 3), label int32) elements.
StreamFn = Callable[..., "tf.data.Dataset"]
# (shuffle, seed, shard) -> unbatched (encoded image file bytes tf.string, label int32) elements.
RecordsFn = Callable[..., "tf.data.Dataset"]


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How to load a source, whatever its kind: the arguments of `carl_tf.data.load_source`,
    which documents each one and its default."""

    split: str
    data_dir: str | None
    image_size: int | None
    holdout: float
    seed: int
    download: bool
    memory_budget_bytes: int
    hold_in_memory: bool


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
            `carl_tf.data.splits.shard_elements`), shuffled at file level when asked.
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

    def check_batch_size(self, batch_size: int, parts: int = 1, whole_batches: bool = True):
        """`carl_tf.data.splits.check_batch_size` for this source cut into `parts` parts.

        Raises:
            DataError: If `batch_size` is not positive, or, with `whole_batches`, larger than
                the images of a part.
        """
        check_batch_size(batch_size, self.num_examples, parts, self.description, whole_batches)


def num_classes_of(labels: np.ndarray) -> int | None:
    """Largest label + 1, or None when every label is -1 (unlabelled)."""
    return int(labels.max()) + 1 if labels.size and labels.max() >= 0 else None
