"""A TFDS dataset's holdout is carved from its train split by the folder's rules (cifar10_cpu)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from carl_tf import data
from carl_tf.configs import cifar10_cpu
from carl_tf.data.splits import holdout_indices


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS dataset whose train split has 20 labelled 4x4 images (10, 6 and 4 per class)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    labels = [0] * 10 + [1] * 6 + [2] * 4
    splits = {
        "train": [
            (f"train{i}", {"image": rng.integers(0, 256, (4, 4, 3), np.uint8), "label": label})
            for i, label in enumerate(labels)
        ],
        "test": [("test0", {"image": np.zeros((4, 4, 3), np.uint8), "label": 1})],
    }
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(4, 4, 3)),
            "label": tfds.features.ClassLabel(num_classes=3),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name="carl_holdout_images",
        version="1.0.0",
        features=features,
        split_datasets=splits,
        data_dir=data_dir,
    )
    return str(data_dir), np.array(labels)


def test_the_holdout_is_the_folders_split_of_the_train_records(tfds_dir):
    data_dir, labels = tfds_dir
    parts = {
        split: data.load_source(
            "carl_holdout_images", split=split, data_dir=data_dir, holdout=0.25, seed=3
        )
        for split in ("train", "test")
    }
    assert (parts["train"].num_examples, parts["test"].num_examples) == (14, 6)
    assert parts["test"].description == "carl_holdout_images (test split)"
    # The whole train split in file order (TFDS shuffles the records as it writes them).
    everything, file_labels = data.source_arrays(
        data.load_source("carl_holdout_images", split="train", data_dir=data_dir)
    )
    assert sorted(file_labels) == sorted(labels)
    expected = holdout_indices(file_labels, "test", 0.25, 3, "x")
    _, held_labels = data.source_arrays(parts["test"])
    assert np.bincount(held_labels).tolist() == [3, 2, 1]  # of 10, 6 and 4, as in a folder
    held, _ = data.source_arrays(parts["test"])
    kept, _ = data.source_arrays(parts["train"])
    assert np.array_equal(held, everything[expected])  # the records in file order
    assert len({x.tobytes() for x in held} & {x.tobytes() for x in kept}) == 0


def test_cifar10_cpu_reads_tfds_with_the_folders_holdout():
    config = cifar10_cpu.get_config()
    assert (config.dataset, config.holdout, config.split_seed) == ("cifar10", 0.1, 0)
