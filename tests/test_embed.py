"""Embeddings out (`carl_tf.embed_images`, `carl-embed`) and the public `carl_tf.export_backbone`."""

import csv
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import carl_tf
from carl_tf import backbones
from carl_tf.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, K = 16, 6


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    backbone = backbones.build_backbone("resnet18", width=4, image_size=SIZE)
    return carl_tf.CARL(backbone, num_prototypes=K, projection_hidden_units=(16,))


@pytest.fixture(scope="module")
def keras_file(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "carl.keras")
    model(np.zeros((1, SIZE, SIZE, 3), np.float32))
    model.save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    """Five images in two sub-folders, of mixed sizes and formats, and one truncated JPEG."""
    rng = np.random.default_rng(0)
    for name, size, ext in [
        ("a/1", 16, "png"),
        ("a/2", 24, "jpg"),
        ("b/3", 16, "bmp"),
        ("b/4", 40, "jpg"),
        ("5", 8, "png"),
    ]:
        (tmp_path / "images" / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{name}.{ext}")
    whole = (tmp_path / "images" / "a" / "2.jpg").read_bytes()
    (tmp_path / "images" / "b" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    return tmp_path / "images"


def test_csv_has_one_row_per_readable_file_with_its_prototype(model, folder, tmp_path, caplog):
    output = str(tmp_path / "e.csv")
    result = carl_tf.embed_images(model, str(folder), output, batch_size=2)
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    dimension = model.backbone.output_shape[-1]
    assert header == ["file", "prototype", "probability", *(f"f{i}" for i in range(dimension))]
    assert [row[0] for row in rows] == ["5.png", "a/1.png", "a/2.jpg", "b/3.bmp", "b/4.jpg"]
    assert result.skipped == ("b/cut.jpg",) and "skipped b/cut.jpg" in caplog.text
    assert (result.num_images, result.dimension, result.num_prototypes) == (5, dimension, K)
    # The same figures as the model gives on the resized image.
    image = np.asarray(Image.open(folder / "a" / "1.png"), np.float32)[None]
    expected = np.asarray(model.backbone(image, training=False))[0]
    np.testing.assert_allclose([float(v) for v in rows[1][3:]], expected, rtol=1e-4, atol=1e-5)
    probabilities = np.asarray(model(image, training=False))[0]
    assert int(rows[1][1]) == probabilities.argmax()
    assert not os.path.exists(output + ".tmp")


def test_npz_from_a_keras_file(keras_file, folder, tmp_path):
    output = str(tmp_path / "e.npz")
    carl_tf.embed_images(keras_file, str(folder), output)
    arrays = np.load(output)
    assert list(arrays["files"]) == ["5.png", "a/1.png", "a/2.jpg", "b/3.bmp", "b/4.jpg"]
    assert arrays["features"].shape[0] == 5 and arrays["features"].dtype == np.float32
    assert arrays["prototypes"].shape == (5,) and np.all(arrays["prototypes"] < K)
    assert np.all((arrays["probabilities"] > 0) & (arrays["probabilities"] <= 1))


@pytest.mark.parametrize(
    "images, output, message",
    [
        ("missing", "e.csv", "no such folder"),
        ("images", "e.json", "must end in .csv or .npz"),
        ("images", "nowhere/e.csv", "no such folder for the output"),
        ("empty", "e.csv", "holds no image file"),
    ],
)
def test_paths_that_cannot_work_are_refused_first(model, folder, tmp_path, images, output, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=message):
        carl_tf.embed_images(model, str(tmp_path / images), str(tmp_path / output))


def test_export_backbone_of_ones_own_model_serves_without_carl_tf(model, tmp_path):
    path = str(tmp_path / "exported")
    carl_tf.export_backbone(model, path)
    served = tf.saved_model.load(path)
    images = tf.random.uniform((3, SIZE, SIZE, 3), 0, 255, seed=1)
    features = served.signatures["serving_default"](images=images)["features"]
    np.testing.assert_allclose(features, model.backbone(images, training=False), atol=1e-4)
    probabilities = served.signatures["assign"](images=images)["probabilities"]
    assert probabilities.shape == (3, K)
    with pytest.raises(UsageError, match="takes a carl_tf.CARL"):
        carl_tf.export_backbone(model.backbone, path)


def test_carl_embed_refuses_a_bad_path_in_one_line():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "embed.py"), "--model=x", "--images=/nonexistent"]
        + ["--output=e.csv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "error: /nonexistent: no such folder; pass a folder of image files as --images\n"
    )


@pytest.mark.slow
def test_carl_embed_writes_the_file(keras_file, folder, tmp_path):
    output = tmp_path / "e.csv"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "embed.py"), f"--model={keras_file}"]
        + [f"--images={folder}", f"--output={output}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 5 embeddings" in result.stdout and "skipped 1 unreadable" in result.stdout
    assert "skipped b/cut.jpg" in result.stderr and "oneDNN" not in result.stderr
    assert len(output.read_text().splitlines()) == 6
