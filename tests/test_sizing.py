"""A folder or npz of one's own images without a preset gets defaults sized to it."""

import numpy as np
import pytest
from PIL import Image

from carl_tf.configs.common import paper_recipe
from carl_tf.data.sources import count_images
from carl_tf.errors import DataError
from carl_tf.run.config import validate_config
from carl_tf.training.sizing import size_to_source, sized_batch


def own_folder(root, per_class=(10, 10, 10, 10)):
    rng = np.random.default_rng(0)
    for index, count in enumerate(per_class):
        (root / f"class{index}").mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{index}" / f"{i}.png")
    return f"folder:{root}"


@pytest.mark.parametrize(
    "num_train, batch", [(364, 32), (45000, 256), (2048, 256), (2047, 128), (10, 2)]
)
def test_the_batch_leaves_eight_steps_per_epoch(num_train, batch):
    assert sized_batch(num_train, 256) == batch


def test_a_labelled_folder_gets_a_holdout_the_monitor_and_a_batch_that_uses_it(tmp_path):
    config = paper_recipe()
    config.dataset = own_folder(tmp_path / "images")
    config.knn_every = 0
    line = size_to_source(config, fixed=set())
    assert (config.holdout, config.knn_every, config.batch_size) == (0.1, 5, 4)
    assert line.startswith(f"{config.dataset} holds 40 images, 4 classes: sized")
    assert "holdout 0.1" in line and "batch 4 (9 steps per epoch" in line
    validate_config(config)


def test_fields_the_user_set_stay(tmp_path):
    config = paper_recipe()
    config.dataset = own_folder(tmp_path / "images")
    config.batch_size = 16
    assert size_to_source(config, fixed={"holdout", "batch_size", "knn_every"}) is None
    assert (config.holdout, config.batch_size) == (0.0, 16)


def test_an_unlabelled_npz_keeps_no_holdout_and_gets_only_its_batch(tmp_path):
    path = tmp_path / "own.npz"
    np.savez(path, x=np.zeros((100, 8, 8, 3), np.uint8))
    config = paper_recipe()
    config.dataset = f"npz:{path}"
    assert count_images(config.dataset) == (100, None)
    line = size_to_source(config, fixed=set())
    assert (config.holdout, config.batch_size) == (0.0, 8) and "unlabelled" in line
    np.savez(path, x=np.zeros((30, 8, 8, 3), np.uint8), y=np.arange(30) % 3)
    assert count_images(f"npz:{path}") == (30, 3)


def test_a_source_that_cannot_be_counted_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        count_images(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read npz:"):
        count_images(f"npz:{tmp_path / 'bad.npz'}")


def test_print_config_shows_the_defaults_sized_to_the_source(tmp_path):
    import json
    import os
    import subprocess
    import sys

    path = tmp_path / "own.npz"
    np.savez(path, x=np.zeros((404, 8, 8, 3), np.uint8), y=np.arange(404) % 4)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "train.py", f"--dataset=npz:{path}", "--print_config"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert (printed["holdout"], printed["batch_size"]) == (0.1, 32)
    assert "holds 404 images, 4 classes" in result.stderr
