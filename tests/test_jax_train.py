"""train.py under Keras's JAX backend: trains, monitors kNN, checkpoints, resumes after SIGKILL and
exports a `.keras` model that loads under TensorFlow; and the same without TensorFlow installed.

The JAX runs are subprocesses (tests/jax_support.py); this process runs TensorFlow and checks
what they wrote.
"""

import csv
import os
import signal
import subprocess
import sys
import time

import jax_train_job as job
import keras
import numpy as np
import pytest
import tensorflow as tf
from jax_support import REPO, jax_environment, requires_jax, run_under_jax

import carl_tf  # noqa: F401  (registers carl_tf's classes for load_model)

pytestmark = requires_jax

# The digits smoke preset, 2 epochs, kNN every epoch; float32, so both backends compute alike.
FLAGS = ["--config=configs/digits.py:smoke", "--epochs=2", "--knn_every=1"]


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A float32 JAX run SIGKILLed during epoch 2 (once epoch 1's checkpoint is written), then
    the same command again through tests/jax_train_job.py, which saves what the export computes.

    Returns (workdir, the killed run's files, the rerun's process, its npz).
    """
    tmp = tmp_path_factory.mktemp("jax_train")
    workdir = str(tmp / "run")
    flags = [*FLAGS, "--precision=float32", f"--workdir={workdir}"]
    killed = subprocess.Popen(
        [sys.executable, "train.py", *flags],
        cwd=REPO,
        env=jax_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_checkpoint = os.path.join(workdir, "checkpoints", "ckpt-0001.keras")
    deadline = time.time() + 300
    while not os.path.exists(first_checkpoint) and killed.poll() is None:
        assert time.time() < deadline, "no checkpoint of epoch 1 in time"
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = {
        "export": os.path.exists(os.path.join(workdir, "export")),
        "epochs": [int(row["epoch"]) for row in metrics(workdir)],
    }
    out = str(tmp / "jax.npz")
    rerun = run_under_jax(["tests/jax_train_job.py", out, *flags], timeout=400)
    return workdir, left, rerun, np.load(out)


def test_killed_run_resumes_after_epoch_one_and_finishes(resumed_run):
    workdir, left, rerun, _ = resumed_run
    assert not left["export"] and left["epochs"] in ([0, 1], [0, 1, 2])  # killed mid-run
    assert "after epoch 1" in rerun.stderr
    rows = metrics(workdir)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(row["knn_top1"] for row in rows)  # untrained (epoch 0) and every epoch
    for row in rows[1:]:
        assert np.isfinite(float(row["loss"])) and float(row["prototypes_in_use"]) >= 1
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "ckpt-0001.keras",
        "ckpt-0002.keras",
    ]
    assert os.listdir(os.path.join(workdir, "tensorboard"))  # TensorFlow is installed here
    assert "kNN top-1: untrained" in rerun.stdout


def test_keras_export_loads_under_tensorflow_with_the_same_assignments(resumed_run):
    workdir, _, _, computed = resumed_run
    model = keras.saving.load_model(os.path.join(workdir, "export", "carl.keras"))
    images = job.images()
    np.testing.assert_allclose(
        model.predict(images, verbose=0), computed["probabilities"], atol=1e-5
    )
    np.testing.assert_allclose(
        model.backbone(images, training=False), computed["features"], atol=1e-4
    )


def test_saved_model_written_under_jax_gives_the_backbones_features(resumed_run):
    workdir, _, _, computed = resumed_run
    loaded = tf.saved_model.load(os.path.join(workdir, "export", "backbone"))
    images = tf.constant(job.images())
    features = loaded.signatures["serving_default"](images=images)["features"]
    np.testing.assert_allclose(features, computed["features"], atol=1e-4)
    probabilities = loaded.signatures["assign"](images=images)["probabilities"]
    np.testing.assert_allclose(probabilities, computed["probabilities"], atol=1e-5)
    empty = loaded.signatures["serving_default"](images=tf.zeros((0, 32, 32, 3)))["features"]
    assert empty.shape == (0, features.shape[1])


def _without_tensorflow(workdir, *flags) -> subprocess.CompletedProcess:
    """train.py under JAX where TensorFlow cannot be imported; fails the test unless it exits 0."""
    return run_under_jax(
        ["train.py", f"--workdir={workdir}", *flags], without_tensorflow=True, timeout=400
    )


def test_trains_on_digits_without_tensorflow(tmp_path):
    workdir = tmp_path / "digits"
    result = _without_tensorflow(workdir, *FLAGS, "--epochs=1")
    assert [int(row["epoch"]) for row in metrics(workdir)] == [0, 1]
    assert os.path.exists(workdir / "export" / "carl.keras")
    assert not os.path.exists(workdir / "export" / "backbone")
    saved_model_lines = [line for line in result.stderr.splitlines() if "SavedModel" in line]
    tensorboard_lines = [line for line in result.stderr.splitlines() if "TensorBoard" in line]
    assert len(saved_model_lines) == 1 and "needs TensorFlow" in saved_model_lines[0]
    assert len(tensorboard_lines) == 1 and "needs TensorFlow" in tensorboard_lines[0]
    assert "Traceback" not in result.stderr
    assert f"exported the model to {workdir / 'export' / 'carl.keras'}" in result.stdout


def test_trains_on_an_npz_source_without_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y=np.arange(160) % 4)
    workdir = tmp_path / "npz"
    flags = [*FLAGS, f"--dataset=npz:{path}", "--holdout=0.2", "--batch_size=32", "--epochs=1"]
    _without_tensorflow(workdir, *flags)
    assert [int(row["epoch"]) for row in metrics(workdir)] == [0, 1]
    assert os.path.exists(workdir / "export" / "carl.keras")


def test_multi_worker_is_refused_under_jax_in_one_line(tmp_path):
    result = run_under_jax(
        ["train.py", *FLAGS, "--strategy=multi_worker", f"--workdir={tmp_path / 'run'}"],
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "--strategy=multi_worker needs the TensorFlow backend" in line
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")
