"""`--backbone=keras:NAME`: any keras.applications constructor trains, resumes, exports and is
evaluated through the same run directory as the built-in ResNets."""

import os

import pytest

import carl_tf
from carl_tf.configs import digits
from carl_tf.errors import UsageError
from carl_tf.evaluation.settings import ProtocolSettings
from carl_tf.run.config import validate_config


def mobilenet_config():
    config = digits.get_config("smoke")
    config.backbone = "keras:MobileNetV3Small"
    config.epochs, config.knn_every, config.train_subset = 1, 1, 250
    return config


def test_the_config_takes_keras_names_and_refuses_others_listing_what_is_accepted():
    validate_config(mobilenet_config())
    config = mobilenet_config()
    for wrong in ("keras:mobilenet", "MobileNetV3Small", "resnet9"):
        config.backbone = wrong
        with pytest.raises(UsageError, match=r"resnet18, resnet34, resnet50, or keras:NAME"):
            validate_config(config)


@pytest.mark.slow
def test_a_keras_application_trains_resumes_exports_and_is_evaluated(tmp_path):
    workdir = str(tmp_path / "mobilenet")
    result = carl_tf.pretrain(mobilenet_config(), workdir, verbose=0)
    assert result.trained
    assert os.path.isfile(os.path.join(result.backbone_export, "saved_model.pb"))
    assert not carl_tf.pretrain(mobilenet_config(), workdir, verbose=0).trained  # resumed: done
    settings = ProtocolSettings(protocols=("knn",), knn_k=20)
    evaluation = carl_tf.evaluate(workdir, settings=settings, draw_plots=False)
    assert evaluation.figures["knn_top1"] > 10.0  # ten classes: above chance
    assert evaluation.settings["weights_epoch"] == 1


def test_an_unknown_keras_application_is_refused_before_the_run_directory(tmp_path):
    config = mobilenet_config()
    config.backbone = "keras:MobileNetV3Smal"
    with pytest.raises(UsageError, match="did you mean keras:MobileNetV3Small"):
        carl_tf.pretrain(config, str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()
