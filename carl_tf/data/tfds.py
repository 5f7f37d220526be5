"""A TFDS dataset as a source: any TFDS name (`cifar10`, `stl10`, `imagenet2012`, ...).

Read from prepared TFDS data (downloaded only when asked), its images decoded as they are read
and cached in memory when the split fits the budget. With a holdout, `train` and `test` are the
two parts of the dataset's train split, cut by the same seeded per-label rule as a folder's.
"""

from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data.image_source import ACCEPTED_FORMS, ImageSource, LoadOptions
from carl_tf.data.optional_tensorflow import require_tensorflow
from carl_tf.data.resizing import resize
from carl_tf.data.splits import Shard, holdout_indices, shard_elements
from carl_tf.errors import DataError, first_line

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


def load(name: str, options: LoadOptions) -> ImageSource:
    """A prepared TFDS dataset split, cached in memory when it fits the budget (and may).

    With a `holdout`, `train` and `test` are the two parts of the dataset's train split (its
    own test split is not read), cut by `seed` as a folder's images are.

    Raises:
        DataError: If the dataset is unknown, not prepared (and may not be downloaded), has no
            such split, or cannot be split or sized as asked.
        UsageError: If TensorFlow or TensorFlow Datasets is not installed.
    """
    split, image_size, holdout = options.split, options.image_size, options.holdout
    tf = require_tensorflow(
        f"source '{name}' is read as a TFDS dataset, which needs TensorFlow (pip install "
        "tensorflow tensorflow-datasets); without it use digits, folder:PATH or npz:PATH"
    )
    import tensorflow_datasets as tfds  # heavy; only TFDS sources need it

    try:
        builder = tfds.builder(name, data_dir=options.data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise DataError(f"unknown source '{name}'; use {ACCEPTED_FORMS}") from error
    except Exception as error:  # tfds raises many types for malformed names or configs.
        raise DataError(
            f"cannot open '{name}' as a TFDS dataset: {first_line(error)}; use {ACCEPTED_FORMS}"
        ) from error
    if holdout and split not in ("train", "test"):
        raise DataError(
            f"with a holdout, the splits of TFDS dataset {name} are 'train' and 'test', the two "
            "parts of its train split",
            f"split '{split}' needs holdout 0",
            fields=("holdout",),
        )
    where = builder.data_dir_root
    if not builder.is_prepared():
        if not options.download:
            raise DataError(
                f"TFDS dataset {name} is not prepared in {where} and downloading is off",
                f"point data_dir at prepared TFDS data (run `tfds build {name}` on a machine "
                "with internet) or set download",
                fields=("data_dir", "download"),
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # Network, disk and manual-download errors alike.
            raise DataError(
                f"could not download and prepare TFDS dataset {name} into {where}: "
                f"{first_line(error)}",
                f"run `tfds build {name}` on a machine with internet and point data_dir at "
                "its data directory",
                fields=("data_dir",),
            ) from error
    info = builder.info
    # A holdout is carved from the train split as from a folder's images: the same seeded,
    # per-label fractions (`holdout_indices`), over the records in file order.
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
            f"TFDS dataset {name} has no labels to hold out a stratified split by",
            "set holdout to 0",
            fields=("holdout",),
        )
    image_feature = info.features[image_key]
    height, width, channels = image_feature.shape
    if image_size:
        size = (image_size, image_size)
    elif height and width:
        size = (height, width)
    else:
        raise DataError(
            f"the images of TFDS dataset {name} differ in size",
            "set image_size to resize them to one size",
            fields=("image_size",),
        )

    def label_of(features: dict) -> tf.Tensor:
        return tf.cast(features[label_key], tf.int32) if label_key else tf.constant(-1)

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        image = image_feature.decode_example(encoded)
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels != 3:
            image = image[..., :3]
        if (height, width) != size:
            image = resize(image, size)
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
            cache=options.hold_in_memory
            and count * size[0] * size[1] * 3 <= options.memory_budget_bytes,
            records=records,
            native_size=(height, width) if height and width else None,
            memory_budget_bytes=options.memory_budget_bytes,
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
    keep = holdout_indices(labels, part, holdout, options.seed, f"{name} (train split)")
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
