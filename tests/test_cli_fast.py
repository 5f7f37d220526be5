"""The programs check flags and config before TensorFlow loads: a mistake is one line at once."""

import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow alone takes 5-20 s to load on a 2-core machine; a check before it takes well under 1.
LIMIT_S = 3.0


def run_timed(script: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    return result, time.monotonic() - start


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["--bogus=1"], "Unknown command line flag 'bogus'"),
        ("train.py", ["--backbone=resnet9"], "resnet50, or keras:NAME for a keras.applications"),
        ("train.py", ["--backbone=keras:mobilenet"], "got 'keras:mobilenet'; fix --backbone"),
        ("train.py", ["--epochs=0"], "epochs must be at least 1, got 0; fix --epochs"),
        ("train.py", ["--image_size=0"], "image_size must be at least 1, got 0; fix --image_size"),
        ("train.py", ["--config.momentum=-1"], "fix --config.momentum"),
        ("train.py", ["--config.momentm=0.5"], "did you mean momentum"),
        ("train.py", ["--config=nopreset"], "no preset or config file 'nopreset'"),
        ("train.py", ["--precision=float8"], "--precision=float8"),
        ("evaluate.py", ["--linear=fast"], "--linear=fast"),
        ("evaluate.py", ["--model=x", "--knn_k=0"], "knn_k must be positive"),
        ("evaluate.py", ["--model=x", "--protocol=knn,probe"], "unknown protocol 'probe'"),
        ("evaluate.py", ["--model=runs/none"], "no model at"),
        ("evaluate.py", ["--model=README.md"], "neither a train.py workdir, a SavedModel nor"),
    ],
)
def test_a_mistake_is_one_line_before_tensorflow_loads(script, args, message):
    result, seconds = run_timed(script, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert seconds < LIMIT_S, f"{seconds:.1f} s: TensorFlow loaded before the flags were checked"


def test_help_and_print_config_need_no_tensorflow():
    for args in (["--help"], ["--print_config", "--epochs=3"]):
        result, seconds = run_timed("train.py", *args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert seconds < LIMIT_S, f"{args}: {seconds:.1f} s"
    assert '"epochs": 3' in result.stdout


def test_evaluate_under_another_backend_says_so_before_loading_it():
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "evaluate.py"), "--model=runs/none"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "KERAS_BACKEND=tensorflow" in result.stderr
    assert time.monotonic() - start < LIMIT_S


def test_the_light_lists_of_choices_match_the_modules_that_use_them():
    from carl_tf.method import backbones, optimizer
    from carl_tf.run import choices, precision, strategy
    from carl_tf.training import methods

    assert choices.BACKBONES == tuple(backbones.BACKBONES)
    assert choices.METHODS == tuple(methods.METHODS)
    assert (choices.WEIGHT_DECAY_MODES, choices.WEIGHT_DECAY_ON) == (
        optimizer.WEIGHT_DECAY_MODES,
        optimizer.WEIGHT_DECAY_ON,
    )
    assert precision.PRECISIONS == choices.PRECISIONS
    assert strategy.STRATEGIES == choices.STRATEGIES


def test_the_fast_linear_probe_is_the_default():
    from carl_tf.evaluation.settings import ProtocolSettings

    assert ProtocolSettings().linear == "features"
    result, _ = run_timed("evaluate.py", "--help")
    assert "features (default)" in result.stdout
