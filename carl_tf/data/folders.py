"""The `folder:PATH` source: a tree of JPEG/PNG/BMP/GIF files, labelled by class sub-folder.

A folder that fits the memory budget is decoded into memory (without TensorFlow too); a larger
one, or one loaded with `hold_in_memory=False`, is streamed from disk through tf.data, decoding
each file as it is read. Either way its records (the files' bytes) let the training views be cut
from the full-resolution images.
"""

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data.folder_decoding import decode_all, decode_to_size, first_image_size
from carl_tf.data.folder_listing import list_images, os_names
from carl_tf.data.image_source import ImageSource, LoadOptions, RecordsFn, num_classes_of
from carl_tf.data.optional_tensorflow import require_tensorflow, tensorflow_or_none
from carl_tf.data.splits import Shard, holdout_indices, shard_elements, shard_seed
from carl_tf.errors import DataError, UsageError

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)


def load(spec: str, options: LoadOptions) -> ImageSource:
    """A folder of images, decoded into memory when it fits the budget (and may), else streamed."""
    all_paths, all_labels, class_names = list_images(spec, spec.partition(":")[2])
    indices = holdout_indices(all_labels, options.split, options.holdout, options.seed, spec)
    # The whole folder's first image, so that train and test splits agree.
    native_size = first_image_size(all_paths)
    if native_size is None:
        raise DataError(
            f"none of the {len(all_paths)} image files in {spec} can be decoded; "
            "check that they are valid JPEG, PNG, BMP or GIF files"
        )
    budget = options.memory_budget_bytes
    folder = _Folder(
        spec=spec,
        split=options.split,
        class_names=class_names,
        size=(options.image_size,) * 2 if options.image_size else native_size,
        native_size=native_size,
        one_size=not options.image_size,
        memory_budget_bytes=budget,
    )
    paths, labels = [all_paths[i] for i in indices], all_labels[indices]
    if not options.hold_in_memory:
        require_tensorflow(
            f"streaming {folder.description} from disk (hold_in_memory=False) needs "
            "TensorFlow (pip install tensorflow)"
        )
        return folder.streamed(paths, labels)
    if len(paths) * int(np.prod(folder.image_shape)) > budget:
        budget_mb = f"{budget / (1 << 20):.2f}".rstrip("0").rstrip(".")
        needed_mb = len(paths) * int(np.prod(folder.image_shape)) / (1 << 20)
        if tensorflow_or_none() is None:
            raise UsageError(
                f"{folder.description}: {len(paths)} images of {folder.size[0]}x"
                f"{folder.size[1]} ({needed_mb:.3g} MiB) do not fit the memory budget of "
                f"{budget / (1 << 20):.3g} MiB, and streaming them needs TensorFlow",
                "install it (pip install tensorflow) or raise memory_budget_mb",
                fields=("memory_budget_mb",),
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


def count(spec: str) -> tuple[int, int | None]:
    """How many image files the folder holds and its number of classes (None when unlabelled),
    from the file listing alone.

    Raises:
        DataError: If the folder is missing or cannot be listed as a source.
    """
    paths, labels, _ = list_images(spec, spec.partition(":")[2])
    return len(paths), num_classes_of(labels)


@dataclasses.dataclass(frozen=True)
class _Folder:
    """What every split and subset of one image folder shares, and how each is made."""

    spec: str
    split: str
    class_names: tuple[str, ...] | None
    size: tuple[int, int]
    native_size: tuple[int, int]
    one_size: bool  # no image_size given: every image must have the first one's size
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
                    lambda encoded, label: (decode_to_size(encoded, self.size)[0], label),
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
        images, labels, kept, any_resized = decode_all(paths, labels, self.size)
        if any_resized and self.one_size:
            raise DataError(
                f"the images in {self.spec} differ in size (the first is {self.size[0]}x"
                f"{self.size[1]})",
                "set image_size to resize them to one size",
                fields=("image_size",),
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


def _file_records(paths: list[str], labels: np.ndarray) -> RecordsFn:
    """`records(shuffle, seed, shard)` of image files: their bytes, read only for the shard.

    The file list is sharded before it is shuffled, so each input pipeline opens only its own
    files, and shuffled with the seed and the part's index (`shard_seed`), so every epoch's
    order is fixed by them.
    """
    names = os_names(paths)

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
