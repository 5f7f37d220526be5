"""Every preset in configs/ loads, with and without its `smoke` arg, and passes validation."""

import glob
import importlib
import json
import os

import pytest

from carl_tf.run.config import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def test_the_paper_presets_are_there():
    assert {"cifar10", "cifar100", "stl10", "digits"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_preset_loads_and_validates(name, arg):
    config = importlib.import_module(f"carl_tf.configs.{name}").get_config(arg)
    validate_config(config)
    assert config.dataset


@pytest.mark.parametrize(
    "name, k, kl, epochs",
    [("cifar10", 100, (4.0, 1.5, 100), 200), ("cifar100", 1000, (4.0, 2.5, 100), 200),
     ("stl10", 100, (2.0, 1.0, 100), 200)],
)  # fmt: skip
def test_paper_presets_hold_the_paper_recipe(name, k, kl, epochs):
    """The paper's values, but for cifar100's lambda end: 1.5 collapsed K = 1000 (its docstring)."""
    c = importlib.import_module(f"carl_tf.configs.{name}").get_config()
    assert (c.num_prototypes, (c.kl_start, c.kl_end, c.kl_decay_epochs), c.epochs) == (
        k,
        kl,
        epochs,
    )
    assert (c.backbone, c.batch_size, c.learning_rate, c.momentum) == ("resnet18", 256, 0.03, 0.9)
    assert c.projection_dim == 128


@pytest.mark.parametrize("name", PRESETS)
def test_kl_decay_follows_epochs_unless_set(name):
    """--epochs=3 on a preset must let lambda_e reach its end value (eq. 8) within the run."""
    config = importlib.import_module(f"carl_tf.configs.{name}").get_config()
    config.epochs = 3
    assert 1 <= config.kl_decay_epochs <= 3
    config.kl_decay_epochs = 7
    assert (config.kl_decay_epochs, config.epochs) == (7, 3)


@pytest.mark.slow
def test_imagenet_smoke_trains_resnet50_on_a_folder_of_larger_photos(tmp_path):
    """The ImageNet preset's smoke variant, end to end on generated 120x100 photos."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "fox"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.jpg")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            "--config=imagenet2012:smoke",
            f"--dataset=folder:{tmp_path / 'photos'}",
            "--holdout=0.2",
            "--precision=float32",
            f"--workdir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 120x100 photos at 96 px: each view is cut from the photo, not from a 96 px thumbnail.
    assert "views cut from full-resolution images (first image 100x120 > 96)" in result.stderr
    with open(tmp_path / "run" / "config.json") as f:
        config = json.load(f)
    assert (config["backbone"], config["image_size"], config["warmup_epochs"]) == (
        "resnet50",
        96,
        1,
    )
    assert (tmp_path / "run" / "export" / "carl.keras").is_file()


def test_unknown_preset_arguments_are_refused():
    for name in PRESETS:
        with pytest.raises(ValueError, match="unknown"):
            importlib.import_module(f"carl_tf.configs.{name}").get_config("bogus")


def test_each_preset_is_picked_by_its_dataset_name():
    """--dataset=imagenet2012 alone trains the ImageNet preset, not the paper's 32 px recipe."""
    from carl_tf.cli.train import resolve_config_argument

    for name in ("cifar10", "stl10", "imagenet2012"):
        argv, preset, _ = resolve_config_argument(["train.py", f"--dataset={name}"])
        assert preset == name
        assert any(arg.endswith(f"{name}.py") for arg in argv)


def test_presets_with_more_prototypes_than_a_batch_end_lambda_where_k_1000_held():
    """K above the batch collapsed once lambda decayed to 1.5; CollapseGuard's advice names the
    end that held, and the presets that ship such a K use it."""
    from carl_tf.run.callbacks import HELD_KL_END

    large_k = []
    for name in PRESETS:
        c = importlib.import_module(f"carl_tf.configs.{name}").get_config()
        if c.num_prototypes > c.batch_size:
            large_k.append(name)
            assert c.kl_end >= HELD_KL_END, name
    assert "cifar100" in large_k
