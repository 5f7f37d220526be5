"""In-memory sources and the kNN monitor on a machine with only JAX and Keras (no TensorFlow).

One job (tests/data_jax_job.py) runs under the JAX backend with TensorFlow unimportable and
loads digits, an npz file and an image folder, batches them, provokes the errors of the paths
that need TensorFlow and measures KNNMonitor; this process (TensorFlow) loads the same sources
and weights and compares.
"""

import json
import types

import data_jax_job as job
import keras
import numpy as np
import pytest
from jax_support import requires_jax, run_under_jax
from PIL import Image

from carl_tf import data
from carl_tf.evaluation.monitor import KNNMonitor

pytestmark = [requires_jax, pytest.mark.slow]  # JAX processes: the slow tier

# Pillow decodes JPEGs with libjpeg's accurate integer DCT, TensorFlow with its fast one: on
# these images and on 2,000 CIFAR-10 JPEGs they differ by at most 5 levels, 1 on average.
JPEG_MAX_LEVELS = 8
JPEG_MEAN_LEVELS = 1.5


def _write_folder(root) -> tuple[list[str], list[str]]:
    """Two classes of images in every format, mode and size; one file that is no image.

    Returns:
        The images' names `class/file` in the folder source's order, and the names of the
        lossless ones (PNG, BMP, GIF: decoded exactly alike by Pillow and TensorFlow).
    """
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:20, 0:24]
    smooth = np.stack([x * 9, y * 11, (x + y) * 5 + 30 * np.sin(x / 3)], -1)
    smooth = np.clip(smooth, 0, 255).astype(np.uint8)
    images = {
        "cat/a.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "cat/b.jpg": smooth,
        "cat/c.png": rng.integers(0, 256, (12, 20), dtype=np.uint8),  # grayscale, resized
        "dog/d.bmp": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "dog/e.jpeg": smooth[::-1],
        "dog/f.png": rng.integers(0, 256, (30, 30, 4), dtype=np.uint8),  # alpha, downscaled
        "dog/g.gif": rng.integers(0, 256, (16, 16), dtype=np.uint8),
    }
    for name, image in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name, quality=90)
    (root / "dog" / "h.jpg").write_bytes(b"not a JPEG")
    return sorted(images), [name for name in images if not name.endswith((".jpg", ".jpeg"))]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """What the job found without TensorFlow, and what this process finds with it."""
    work = tmp_path_factory.mktemp("data_without_tensorflow")
    names, lossless = _write_folder(work / "folder")
    rng = np.random.default_rng(1)
    np.savez(
        work / "images.npz",
        x=rng.integers(0, 256, (6, 10, 12, 1), dtype=np.uint8),
        y=np.array([0, 1, -1, 1, 0, 2]),
    )
    keras.utils.set_random_seed(0)
    backbone = job.tiny_backbone()
    backbone.save_weights(str(work / "backbone.weights.h5"))

    train = data.load_source("digits", split="train", holdout=job.HOLDOUT, image_size=24)
    test = data.load_source("digits", split="test", holdout=job.HOLDOUT, image_size=24)
    monitor = KNNMonitor(train.arrays, test.arrays, k=job.KNN_K)
    monitor.set_model(types.SimpleNamespace(backbone=backbone))  # the monitor reads .backbone
    folder = data.load_source(f"folder:{work / 'folder'}", split="all", image_size=job.FOLDER_SIZE)
    expected = {
        "digits": data.load_source("digits", split="all", image_size=job.DIGITS_SIZE).arrays[0],
        "npz": data.load_source(
            f"npz:{work / 'images.npz'}", split="all", image_size=job.NPZ_SIZE
        ).arrays,
        "folder": folder.arrays,
        "knn_top1": monitor.measure(),
    }

    run_under_jax(["tests/data_jax_job.py", str(work)], without_tensorflow=True, timeout=300)
    report = json.loads((work / "jax.json").read_text())
    with np.load(work / "jax.npz") as found:
        arrays = dict(found)
    report["folder"] = f"folder:{work / 'folder'}"
    report["lossless"] = [names.index(name) for name in lossless]
    return report, arrays, expected


def test_the_job_ran_under_jax_without_importing_tensorflow(results):
    report, _, _ = results
    assert report["backend"] == "jax"
    assert report["tensorflow_imported"] == []


def test_digits_and_npz_load_and_batch_as_under_tensorflow(results):
    _, found, expected = results
    np.testing.assert_array_equal(found["digits"], expected["digits"])
    batch = found["digits_batch_3"]
    assert batch.shape == (job.BATCH_SIZE, 24, 24, 3) and batch.dtype == np.uint8
    order = data.array_batches(expected["digits"], job.BATCH_SIZE, seed=0)
    np.testing.assert_array_equal(batch, order[3])  # the same seeded order in both processes
    np.testing.assert_array_equal(found["npz_images"], expected["npz"][0])
    np.testing.assert_array_equal(found["npz_labels"], expected["npz"][1])


def test_folder_decodes_with_pillow_as_tensorflow_does_and_skips_the_bad_file(results):
    report, found, expected = results
    images, labels = expected["folder"]
    np.testing.assert_array_equal(found["folder_labels"], labels)
    assert found["folder_images"].shape == images.shape == (7, 16, 16, 3)
    lossless = report["lossless"]
    np.testing.assert_array_equal(found["folder_images"][lossless], images[lossless])
    difference = np.abs(found["folder_images"].astype(int) - images)
    assert difference.max() <= JPEG_MAX_LEVELS and difference.mean() <= JPEG_MEAN_LEVELS
    [warning] = report["folder_warnings"]
    assert warning.startswith(
        f"{report['folder']} (all split): skipped 1 of 8 image files that could not be decoded"
    )
    assert warning.endswith("dog/h.jpg")  # the warning names the undecodable file
    assert not report["folder_records"]  # views are cut from the held images
    assert found["folder_batch_0"].shape == (4, 16, 16, 3)


@pytest.mark.parametrize(
    ("error", "names"),
    [
        ("tfds_error", ("TFDS", "pip install tensorflow", "folder:PATH")),
        ("over_budget_error", ("memory budget", "pip install tensorflow", "memory_budget_mb")),
        ("make_dataset_error", ("tf.data", "pip install tensorflow", "array_batches")),
    ],
)
def test_paths_that_need_tensorflow_say_so_in_one_line(results, error, names):
    report, _, _ = results
    raised = report[error]
    assert raised["usage_error"], raised
    assert "\n" not in raised["message"] and "needs TensorFlow" in raised["message"]
    assert all(name in raised["message"] for name in names), raised["message"]


def test_knn_monitor_under_jax_gives_tensorflows_accuracy(results):
    report, _, expected = results
    assert report["knn_top1"] == expected["knn_top1"]
    assert report["knn_top1_batched_bank"] == expected["knn_top1"]
    assert expected["knn_top1"] > 50.0  # an informative figure, not chance (10%)
