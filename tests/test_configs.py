"""Every preset in configs/ loads, with and without its `smoke` arg, and passes validation."""

import glob
import importlib
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
    [("cifar10", 100, (4.0, 1.5, 100), 200), ("cifar100", 1000, (4.0, 1.5, 100), 200),
     ("stl10", 100, (2.0, 1.0, 100), 200)],
)  # fmt: skip
def test_paper_presets_hold_the_paper_recipe(name, k, kl, epochs):
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
