"""On a small data set of few classes, figures that mean nothing are left out or explained."""

import dataclasses

import keras
import numpy as np
import pytest

import carl_tf
from carl_tf import backbones
from carl_tf.errors import UsageError
from carl_tf.evaluation import plots
from carl_tf.evaluation.loading import LoadedModel
from carl_tf.evaluation.settings import ProtocolSettings

SIZE = 16


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """120 images of 4 classes, as a user's own small labelled set."""
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    images = rng.integers(0, 256, (120, SIZE, SIZE, 3), dtype=np.uint8)
    images[..., 0] = (labels * 60)[:, None, None]  # a class signal the features can see
    path = tmp_path_factory.mktemp("npz") / "own.npz"
    np.savez(path, x=images, y=labels)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    backbone = backbones.build_backbone("resnet18", width=4, image_size=SIZE)
    carl = carl_tf.CARL(backbone, num_prototypes=8, projection_hidden_units=(16,))
    carl(np.zeros((1, SIZE, SIZE, 3), np.float32))
    return LoadedModel(
        path="own",
        weights="own",
        kind="keras",
        backbone=backbone,
        assigner=carl,
        run=None,
        run_config=None,
    )


SETTINGS = ProtocolSettings(protocols=("knn", "linear"), linear_epochs=2)


def test_top5_of_four_classes_is_na_and_a_wide_knn_vote_is_explained(model, npz):
    result = carl_tf.evaluate(model, dataset=npz, holdout=0.25, settings=SETTINGS)
    assert result.figures["linear_top5"] is None and result.figures["linear_top1"] is not None
    notes = " ".join(result.notes)
    assert "linear top-5 is n/a: with 4 classes" in notes
    assert "k = 200 votes over more neighbours than a class has images" in notes
    assert "n/a" in result.table()


def test_a_run_without_holdout_is_refused_with_what_that_means_then_noted(model, npz):
    run_model = dataclasses.replace(
        model, run_config={"dataset": npz, "holdout": 0.0, "split_seed": 0, "seed": 0}
    )
    with pytest.raises(
        UsageError, match="held out no images .* every image was in its pretraining"
    ):
        carl_tf.evaluate(run_model, settings=SETTINGS)
    result = carl_tf.evaluate(run_model, holdout=0.25, settings=SETTINGS)
    assert any("were among those it pretrained on" in note for note in result.notes)
    assert result.settings["scores_pretraining_images"] is True


def test_training_curves_of_a_run_without_monitor_say_so():
    rows = [
        {"epoch": str(e), "loss": "4.0", "consistency": "3.9", "kl": "0.1", "kl_weight": "2"}
        | {"learning_rate": "0.1", "prototypes_in_use": "5", "knn_top1": "", "seconds": "1"}
        for e in (1, 2)
    ]
    figure = plots.training_curves_figure(rows)
    texts = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert any(text.startswith("no kNN monitor in this run") for text in texts)


def test_full_linear_protocol_skips_crop_and_flip_on_digits_upscaled_from_8x8(model):
    """On digits the full protocol's crop and flip cost 20+ points (README, Evaluation): it
    trains on the images as they are, lands on the features mode's figure and says why."""
    figures = {}
    for mode in ("features", "full"):
        settings = ProtocolSettings(protocols=("linear",), linear=mode, linear_epochs=2)
        result = carl_tf.evaluate(model, dataset="digits", holdout=0.2, settings=settings)
        figures[mode] = result.figures["linear_top1"]
    assert figures["full"] == pytest.approx(figures["features"], abs=0.2)
    assert result.settings["linear_augment"] is False
    assert any("upscaled from 8x8 to 16x16" in note for note in result.notes)


def test_full_linear_protocol_crops_and_flips_images_at_their_own_resolution(model, npz):
    settings = ProtocolSettings(protocols=("linear",), linear="full", linear_epochs=1)
    result = carl_tf.evaluate(model, dataset=npz, holdout=0.25, settings=settings)
    assert result.settings["linear_augment"] is True
    assert not any("without the protocol's random crop" in note for note in result.notes)
