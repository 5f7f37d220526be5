"""Image sources and the tf.data pipeline: digits, folders, npz files and real TFDS data."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from carl_tf import data
from carl_tf.data import numpy_images

# Uniform grey levels that identify the class of a folder image after decoding and resizing.
_CLASS_LEVELS = {"ant": 40, "bee": 130, "cow": 220}
_CIFAR_FOLDER = "/tmp/cifar10/train"


def _rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Each (image, label) pair as bytes, sorted: a multiset to compare splits with."""
    return sorted(image.tobytes() + label.tobytes() for image, label in zip(images, labels))


def _save(path, array: np.ndarray, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _level(level: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, level, np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    """Three classes of two images each, in every supported format, mode and size."""
    tmp_path = tmp_path / "classes"
    ant, bee, cow = (_CLASS_LEVELS[c] for c in ("ant", "bee", "cow"))
    _save(tmp_path / "ant" / "a.PNG", _level(ant, (10, 12, 3)))
    _save(tmp_path / "ant" / "b.jpeg", _level(ant, (8, 8)))  # grayscale
    rgba = _level(bee, (16, 16, 4))
    rgba[..., 3] = 50  # alpha is dropped, not blended
    _save(tmp_path / "bee" / "c.bmp", rgba)
    # An animated GIF in a nested folder: the first frame is the image.
    frames = [Image.fromarray(_level(v, (9, 7))) for v in (bee, 250)]
    os.makedirs(tmp_path / "bee" / "nested")
    frames[0].save(tmp_path / "bee" / "nested" / "d.GIF", save_all=True, append_images=frames[1:])
    _save(tmp_path / "cow" / "e.png", _level(cow, (5, 5, 4)))
    _save(tmp_path / "cow" / "f.jpg", _level(cow, (12, 12, 3)))
    (tmp_path / "cow" / "notes.txt").write_text("not an image")
    _save(tmp_path / ".ipynb_checkpoints" / "g.png", _level(0, (4, 4, 3)))  # hidden: ignored
    return tmp_path


@pytest.fixture
def flat_folder(tmp_path):
    """An unlabelled folder of three 6x6 PNGs and two files that are not images at all."""
    tmp_path = tmp_path / "flat"
    tmp_path.mkdir()
    for i in range(3):
        _save(tmp_path / f"img{i}.png", _level(10 * i, (6, 6, 3)))
    (tmp_path / "bad1.png").write_bytes(b"garbage")
    (tmp_path / "bad2.JPG").write_bytes(b"")
    return tmp_path


def test_digits_shapes_labels_and_classes():
    source = data.load_source("digits", split="all")
    images, labels = source.arrays
    assert (source.num_examples, source.num_classes, source.image_shape) == (1797, 10, (32, 32, 3))
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and set(labels) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    # Grey made RGB: all channels equal.
    assert np.array_equal(images[..., 0], images[..., 2])
    assert data.load_source("digits", image_size=16).image_shape == (16, 16, 3)
    assert source.native_size == (8, 8)  # scikit-learn's size, before the upscaling


def test_digits_holdout_partitions_stratified_and_is_seeded():
    all_source = data.load_source("digits", split="all")
    train = data.load_source("digits", split="train", holdout=0.2, seed=3)
    test = data.load_source("digits", split="test", holdout=0.2, seed=3)
    assert train.num_examples + test.num_examples == 1797
    # Same multiset of (image, label) as the whole set: disjoint and covering.
    together = [np.concatenate(pair) for pair in zip(train.arrays, test.arrays)]
    assert _rows(*together) == _rows(*all_source.arrays)
    per_class = np.bincount(all_source.arrays[1])
    assert np.array_equal(np.bincount(test.arrays[1]), (0.2 * per_class + 0.5).astype(int))
    again = data.load_source("digits", split="test", holdout=0.2, seed=3)
    assert np.array_equal(again.arrays[0], test.arrays[0])
    other = data.load_source("digits", split="test", holdout=0.2, seed=4)
    assert not np.array_equal(other.arrays[0], test.arrays[0])
    # Without a holdout, train is everything and there is no test split.
    assert data.load_source("digits").num_examples == 1797
    with pytest.raises(data.DataError, match="set holdout") as raised:
        data.load_source("digits", split="test")
    assert raised.value.field == "holdout" and "--" not in str(raised.value)


def test_class_folder_gives_sorted_class_labels_resized_rgb(class_folder):
    source = data.load_source(f"folder:{class_folder}", split="all", image_size=8)
    images, labels = source.arrays
    assert source.class_names == ("ant", "bee", "cow") and source.num_classes == 3
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), [2, 2, 2])
    levels = np.array(list(_CLASS_LEVELS.values()))
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), levels[labels], atol=3)


def test_folder_of_different_sizes_needs_image_size(class_folder):
    with pytest.raises(data.DataError, match="differ in size.*; set image_size to resize"):
        data.load_source(f"folder:{class_folder}", split="all")


def test_unlabelled_folder_has_label_minus_one_and_first_image_size(flat_folder):
    source = data.load_source(f"folder:{flat_folder}", split="all")
    assert source.num_classes is None and source.class_names is None
    assert source.image_shape == (6, 6, 3)
    assert np.array_equal(source.arrays[1], [-1, -1, -1])


def test_corrupt_files_are_skipped_with_one_counting_warning(flat_folder, caplog):
    source = data.load_source(f"folder:{flat_folder}", split="all")
    assert source.num_examples == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 2 of 5" in warnings[0]


def test_streamed_folder_matches_in_memory_and_skips_corrupt_files(class_folder, flat_folder):
    for folder, size in ((class_folder, 8), (flat_folder, None)):
        spec = f"folder:{folder}"
        in_memory = data.load_source(spec, split="all", image_size=size)
        streamed = data.load_source(spec, split="all", image_size=size, memory_budget_bytes=0)
        assert streamed.arrays is None and not streamed.cache
        assert _rows(*data.source_arrays(streamed)) == _rows(*in_memory.arrays)


def test_npz_with_labels_and_one_channel(tmp_path):
    x = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1)
    y = np.array([0, 1, 2, 0, 1, 4])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = data.load_source(f"npz:{tmp_path / 'd.npz'}", split="all")
    images, labels = source.arrays
    assert source.num_classes == 5 and labels.dtype == np.int32
    assert np.array_equal(labels, y)
    assert np.array_equal(images, np.repeat(x, 3, axis=-1))


def test_npz_without_labels_four_channels_resized(tmp_path):
    x = np.full((5, 4, 4, 4), 77, np.uint8)
    x[..., 3] = 0
    np.savez(tmp_path / "d.npz", x=x)
    source = data.load_source(f"npz:{tmp_path / 'd.npz'}", split="all", image_size=6)
    images, labels = source.arrays
    assert source.num_classes is None and np.array_equal(labels, [-1] * 5)
    assert images.shape == (5, 6, 6, 3) and np.all(images == 77)


def test_npz_without_x_names_the_keys_found(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(data.DataError, match=r"no array 'x' \(found: images\)"):
        data.load_source(f"npz:{tmp_path / 'd.npz'}")


@pytest.mark.parametrize("spec", ["folder:{tmp}/missing", "folder:{tmp}", "nope_not_a_dataset"])
def test_bad_sources_raise_one_line_data_errors(tmp_path, spec):
    with pytest.raises(data.DataError) as error:
        data.load_source(spec.format(tmp=tmp_path))
    assert "\n" not in str(error.value) and len(str(error.value)) > 20


def test_the_loader_names_the_field_to_fix_not_a_flag():
    """A library user reads the argument or config field; train.py prints its flag instead."""
    with pytest.raises(data.DataError) as raised:
        data.load_source("digits", image_size=0)
    assert str(raised.value) == "image size must be positive, got 0; fix image_size"
    assert raised.value.field == "image_size"
    flagged = raised.value.with_flags(lambda field: f"--{field}")
    assert isinstance(flagged, data.DataError) and str(flagged).endswith("; fix --image_size")


def test_batch_larger_than_source_is_a_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((300, 2, 2, 3), np.uint8))
    source = data.load_source(f"npz:{tmp_path / 'd.npz'}", split="all")
    with pytest.raises(data.DataError, match="batch size 512 is larger than the 300 images in"):
        data.make_dataset(source, batch_size=512, shuffle=True, drop_remainder=True)
    # Without dropping, one short batch is fine.
    batches = data.make_dataset(source, batch_size=512, shuffle=False, drop_remainder=False)
    assert [len(x) for x, _ in batches] == [300]


def test_batches_drop_remainder_and_have_raw_dtypes():
    source = data.load_source("digits", split="all")
    dataset = data.make_dataset(source, batch_size=500, shuffle=True, drop_remainder=True, seed=1)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 3
    for images, labels in batches:
        assert images.shape == (500, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (500,) and labels.dtype == np.int32
    seen = np.concatenate([labels for _, labels in batches])
    assert not np.array_equal(seen, source.arrays[1][:1500])  # shuffled


@pytest.fixture(scope="module")
def tfds_data_dir(tmp_path_factory):
    """A three-split TFDS dataset of 8x8 grayscale images, written with TFDS's own builder."""
    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    splits = {}
    for split, labels in (
        ("train", [0, 1, 2, 0, 1, 2]),
        ("test", [2, 1]),
        ("unlabelled", [-1] * 5),
    ):
        splits[split] = [
            (f"{split}{i}", {"image": rng.integers(0, 256, (8, 8, 1), np.uint8), "label": label})
            for i, label in enumerate(labels)
        ]
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=3),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name="carl_tiny_images",
        version="1.0.0",
        features=features,
        split_datasets=splits,
        data_dir=data_dir,
    )
    expected = {
        split: (
            # What the pipeline should yield: the grey images made RGB.
            np.stack([np.repeat(e["image"], 3, axis=-1) for _, e in examples]),
            np.array([e["label"] for _, e in examples], np.int32),
        )
        for split, examples in splits.items()
    }
    return str(data_dir), expected


def test_tfds_dataset_loads_joined_splits(tfds_data_dir):
    data_dir, expected = tfds_data_dir
    source = data.load_source("carl_tiny_images", split="unlabelled+train", data_dir=data_dir)
    assert (source.num_examples, source.num_classes, source.image_shape) == (11, 3, (8, 8, 3))
    assert source.cache  # a few hundred bytes fit the memory budget
    joined = [np.concatenate(pair) for pair in zip(expected["unlabelled"], expected["train"])]
    assert _rows(*data.source_arrays(source)) == _rows(*joined)
    batches = data.make_dataset(
        source, batch_size=4, shuffle=True, drop_remainder=True, repeat=True
    )
    images, labels = next(iter(batches))
    assert images.shape == (4, 8, 8, 3) and images.dtype.name == "uint8"
    assert labels.dtype.name == "int32"


def test_tfds_dataset_resizes_and_streams(tfds_data_dir):
    data_dir, expected = tfds_data_dir
    source = data.load_source(
        "carl_tiny_images", split="test", data_dir=data_dir, image_size=4, memory_budget_bytes=0
    )
    images, labels = data.source_arrays(source)
    assert not source.cache and images.shape == (2, 4, 4, 3)
    assert sorted(labels) == sorted(expected["test"][1])


def test_tfds_unknown_split_lists_available_ones(tfds_data_dir):
    data_dir, _ = tfds_data_dir
    with pytest.raises(data.DataError, match=r"no split 'validation' \(available: .*unlabelled"):
        data.load_source("carl_tiny_images", split="validation", data_dir=data_dir)


def test_unprepared_tfds_dataset_fails_fast_without_download(tmp_path):
    with pytest.raises(
        data.DataError, match="not prepared.*point data_dir at.*tfds build cifar10.*set download"
    ):
        data.load_source("cifar10", data_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing was downloaded or prepared


def test_failed_tfds_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\n(more detail)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(
        data.DataError, match="could not download.*Failed to resolve.*data_dir"
    ) as error:
        data.load_source("cifar10", data_dir=str(tmp_path), download=True)
    assert "\n" not in str(error.value)


def test_tfds_holdout_cuts_only_the_train_split():
    # tests/test_tfds_holdout.py loads the two parts.
    with pytest.raises(data.DataError, match="split 'unlabelled' needs holdout 0"):
        data.load_source("stl10", split="unlabelled", holdout=0.1)


@pytest.mark.skipif(not os.path.isdir(_CIFAR_FOLDER), reason="CIFAR-10 JPEG folder not unpacked")
def test_cifar_jpeg_folder():
    source = data.load_source(f"folder:{_CIFAR_FOLDER}", split="test", holdout=0.02)
    assert source.num_classes == 10 and source.image_shape == (32, 32, 3)
    assert np.array_equal(np.bincount(source.arrays[1]), [100] * 10)


def test_tfds_subset_and_shards_read_the_chosen_records_only(tfds_data_dir):
    data_dir, expected = tfds_data_dir
    source = data.load_source("carl_tiny_images", split="unlabelled+train", data_dir=data_dir)
    everything = data.source_arrays(source)
    keep = np.array([1, 4, 5, 9])
    subset = source.subset(keep)
    assert subset.num_examples == 4 and subset.native_size == (8, 8)
    assert _rows(*data.source_arrays(subset)) == _rows(everything[0][keep], everything[1][keep])
    # Two pipelines' parts of the subset: disjoint, together all of it (4 = 2 x 2).
    parts = [list(subset.stream(False, 0, (2, index)).as_numpy_iterator()) for index in range(2)]
    assert [len(part) for part in parts] == [2, 2]
    seen = _rows(
        np.stack([x for part in parts for x, _ in part]), np.array([y for p in parts for _, y in p])
    )
    assert seen == _rows(everything[0][keep], everything[1][keep])
    encoded, label = next(iter(subset.records(False, 0)))
    assert encoded.dtype == tf.string and int(label) == everything[1][1]


def _write_pngs(root, count: int, size: int, classes: int = 2) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        directory = root / f"class_{i % classes}"
        directory.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        (directory / f"{i:04d}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_streamed_folder_subset_equals_the_in_memory_rows_and_skips_dropped_files(tmp_path):
    _write_pngs(tmp_path, 12, 8)
    spec = f"folder:{tmp_path}"
    held = data.load_source(spec, split="all")
    streamed = data.load_source(spec, split="all", memory_budget_bytes=1)
    assert held.arrays is not None and streamed.arrays is None
    keep = np.array([0, 3, 4, 10])
    for source in (held, streamed):
        subset = source.subset(keep)
        assert subset.num_examples == 4
        rows = _rows(*data.source_arrays(subset))
        assert rows == _rows(held.arrays[0][keep], held.arrays[1][keep])
        assert len(list(subset.records(False, 0))) == 4
    # A dropped file is never opened: corrupting it changes nothing of the subset.
    dropped = sorted(tmp_path.glob("*/*.png"))[1]
    dropped.write_bytes(b"not an image")
    streamed = data.load_source(spec, split="all", memory_budget_bytes=1)
    assert len(list(streamed.subset(keep).stream(False, 0))) == 4


def test_shards_of_a_seeded_shuffled_epoch_are_disjoint_and_complete(tmp_path):
    _write_pngs(tmp_path, 13, 8, classes=13)  # each file its own label
    streamed = data.load_source(f"folder:{tmp_path}", split="all", memory_budget_bytes=1)
    held = data.load_source(f"folder:{tmp_path}", split="all")
    for source in (streamed, held):
        labels = [
            np.concatenate(
                [
                    y
                    for _, y in data.make_dataset(
                        source,
                        batch_size=2,
                        shuffle=True,
                        drop_remainder=False,
                        seed=3,
                        shard=(2, index),
                    ).as_numpy_iterator()
                ]
            )
            for index in range(2)
        ]
        assert [len(part) for part in labels] == [6, 6]  # 13 // 2 each, one dropped
        assert not set(labels[0]) & set(labels[1])
        assert set(labels[0]) | set(labels[1]) == set(range(12))
    with pytest.raises(data.DataError, match="shard 2 of 2 does not exist"):
        data.make_dataset(held, batch_size=2, shuffle=False, drop_remainder=False, shard=(2, 2))
    with pytest.raises(data.DataError, match="larger than the 6 images in each of the 2 parts"):
        data.make_dataset(held, batch_size=7, shuffle=False, drop_remainder=True, shard=(2, 0))


def test_labelled_batches_stream_the_labelled_images_in_order(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x=np.arange(5 * 12, dtype=np.uint8).reshape(5, 2, 2, 3),
        y=np.array([0, -1, 1, 1, -1]),
    )
    source = data.load_source(f"npz:{tmp_path / 'd.npz'}", split="all")
    batches = list(data.labelled_batches(source, batch_size=2).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [2, 1]
    images, labels = data.labelled_arrays(source)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)


def test_each_shard_shuffles_its_part_in_an_order_of_its_own(tmp_path):
    _write_pngs(tmp_path, 64, 8, classes=64)
    source = data.load_source(f"folder:{tmp_path}", split="all", memory_budget_bytes=1)
    orders = [
        [int(y) for _, y in source.stream(True, 5, (2, index)).as_numpy_iterator()]
        for index in range(2)
    ]
    # With one permutation for both parts, file 2m + 1 would always follow file 2m.
    assert [b - a for a, b in zip(*orders)] != [1] * 32
    assert data.shard_seed(5, (1, 0)) == 5  # a single pipeline keeps the run's seed


@pytest.mark.parametrize("size", [5, 20, 24, 32, 40])
def test_numpy_resize_gives_the_tensorflow_pixels_of_the_digits(size):
    from sklearn.datasets import load_digits

    gray = load_digits().images[:, :, :, None] * (255.0 / 16.0)
    resized = tf.image.resize(tf.cast(gray, tf.float32), (size, size), antialias=True)
    expected = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(numpy_images.resize(gray, (size, size)), expected)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((4, 37, 53, 3), (32, 32)), ((3, 32, 32, 3), (96, 96)), ((2, 100, 64, 3), (17, 41))],
)
def test_numpy_resize_gives_the_tensorflow_pixels_up_and_down(shape, size):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    resized = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    expected = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(numpy_images.resize(images, size), expected)
    np.testing.assert_array_equal(numpy_images.resize(images[0], size), expected[0])


def test_pillow_decodes_lossless_formats_as_tensorflow_does(class_folder):
    paths = sorted(str(p) for p in class_folder.rglob("*") if p.is_file() and p.suffix != ".txt")
    lossless = [p for p in paths if not p.lower().endswith((".jpg", ".jpeg"))]
    for path, image in zip(lossless, numpy_images.decode_files(lossless)):
        expected = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        np.testing.assert_array_equal(image, expected.numpy(), err_msg=path)
    assert numpy_images.decode_file(str(class_folder / "cow" / "notes.txt")) is None
    assert numpy_images.decode_file(str(class_folder / "missing.png")) is None


def test_pillow_decodes_jpegs_within_a_few_levels_of_tensorflow(tmp_path):
    """TensorFlow's libjpeg runs the fast integer DCT, Pillow the accurate one.

    On a smooth photo-like image the two differ by at most a few levels; with TensorFlow told
    to use the accurate DCT they agree exactly, which shows the DCT is the whole difference.
    """
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, (x + y) * 2 + 20 * np.sin(x / 3)], -1)
    _save(tmp_path / "smooth.jpg", np.clip(image, 0, 255).astype(np.uint8), quality=90)
    encoded = tf.io.read_file(str(tmp_path / "smooth.jpg"))
    pillow = numpy_images.decode_file(str(tmp_path / "smooth.jpg")).astype(int)
    fast = tf.io.decode_image(encoded, channels=3).numpy()
    accurate = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    np.testing.assert_array_equal(pillow, accurate)
    assert np.abs(pillow - fast).max() <= 8 and np.abs(pillow - fast).mean() <= 1.5


def test_array_batches_show_every_image_once_per_pass_in_seeded_orders():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    batches = data.array_batches(images, 4, seed=3)
    assert batches.num_batches is None  # endless: fit takes steps_per_epoch
    stream = np.concatenate([batches[i][:, 0, 0, 0] for i in range(15)])  # 60 images: 6 passes
    assert all(b.shape == (4, 2, 2, 3) and b.dtype == np.uint8 for b in (batches[0], batches[14]))
    passes = stream.reshape(6, 10)
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) == 6  # a fresh order every pass
    again = np.concatenate(
        [data.array_batches(images, 4, seed=3)[i][:, 0, 0, 0] for i in range(15)]
    )
    np.testing.assert_array_equal(stream, again)
    other = np.concatenate(
        [data.array_batches(images, 4, seed=4)[i][:, 0, 0, 0] for i in range(15)]
    )
    assert not np.array_equal(stream, other)
    # Batch 2 takes the last 2 images of pass 0 and the first 2 of pass 1, as tf.data would.
    np.testing.assert_array_equal(batches[2][:, 0, 0, 0], stream[8:12])


class _ImagesOnly(keras.Model):
    """A linear model whose loss needs no labels, as CARL's: fit gets batches of images alone."""

    def __init__(self):
        super().__init__(name="images_only")
        self.dense = keras.layers.Dense(1)

    def call(self, images):
        return self.dense(keras.ops.reshape(keras.ops.cast(images, "float32"), (-1, 48)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras.ops.mean(y_pred**2)


def test_array_batches_feed_fit_for_steps_per_epoch():
    images = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    model = _ImagesOnly()
    model.compile("sgd")
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    batches = data.array_batches(images, 8, 0)
    model.fit(batches, steps_per_epoch=2, epochs=3, shuffle=False, callbacks=[counter])
    assert steps == [0, 1] * 3


def test_array_batches_reject_impossible_batch_sizes():
    images = np.zeros((3, 2, 2, 3), np.uint8)
    with pytest.raises(data.DataError, match="larger than the 3 images"):
        data.array_batches(images, 4, seed=0)
    with pytest.raises(data.DataError, match="must be positive"):
        data.array_batches(images, 0, seed=0)


def test_labelled_array_batches_are_the_labelled_batches_of_held_arrays(tmp_path):
    x = np.arange(5 * 12, dtype=np.uint8).reshape(5, 2, 2, 3)
    y = np.array([0, -1, 1, 1, -1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = data.load_source(f"npz:{tmp_path / 'd.npz'}", split="all")
    expected = list(data.labelled_batches(source, batch_size=2).as_numpy_iterator())
    batches = list(data.LabelledArrayBatches(*source.arrays, batch_size=2))
    assert len(batches) == len(expected) == 2
    for (images, labels), (want_images, want_labels) in zip(batches, expected):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
        assert labels.dtype == np.int32
