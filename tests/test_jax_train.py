"""train.py under Keras's JAX backend: trains, monitors kNN, checkpoints, resumes after SIGKILL and
exports a `.keras` model that loads under TensorFlow; and the same without TensorFlow installed.

The JAX runs are subprocesses (tests/jax_support.py); this process runs TensorFlow and checks
what they wrote.
"""

import csv
import glob
import os
import signal
import subprocess
import time

import jax_train_job as job
import keras
import numpy as np
import pytest
import tensorflow as tf
from jax_support import requires_jax, run_under_jax, start_under_jax
from tensorboard.backend.event_processing import event_accumulator

import carl_tf  # noqa: F401  (registers carl_tf's classes for load_model)

pytestmark = [requires_jax, pytest.mark.slow]  # JAX processes: the slow tier

# The digits smoke preset on 320 of its images (5 steps per epoch), 2 epochs, kNN every epoch.
FLAGS = ["--config=configs/digits.py:smoke", "--config.train_subset=320", "--epochs=2"]
FLAGS += ["--knn_every=1"]


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every JAX run of this file, the two without TensorFlow beside the others (JAX compiles on
    one core): name -> what the tests check.

    `resumed`: a float32 run SIGKILLed during epoch 2 (once epoch 1's checkpoint is written),
    then the same command again through tests/jax_train_job.py, which saves what the export
    computes: (workdir, the killed run's files, the rerun's process, its npz). `digits` and
    `npz`: one-epoch runs where TensorFlow cannot be imported: (workdir, exit code, stdout,
    stderr); `digits` runs through tests/jax_train_job.py too, whose npz (`job`) also holds the
    smoke preset's `jit_compile` and that of the model built from it in that TensorFlow-free
    process.
    """
    tmp = tmp_path_factory.mktemp("jax_train")
    rng = np.random.default_rng(0)
    npz = tmp / "images.npz"
    np.savez(npz, x=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y=np.arange(160) % 4)
    digits_job = str(tmp / "digits.npz")
    without = {
        "digits": ["tests/jax_train_job.py", digits_job, *FLAGS, "--epochs=1"],
        "npz": [
            "train.py",
            *FLAGS,
            f"--dataset=npz:{npz}",
            "--holdout=0.2",
            "--batch_size=32",
            "--epochs=1",
        ],
    }
    started = {
        name: start_under_jax([*args, f"--workdir={tmp / name}"], without_tensorflow=True)
        for name, args in without.items()
    }

    workdir = str(tmp / "run")
    flags = [*FLAGS, "--precision=float32", f"--workdir={workdir}"]
    killed = start_under_jax(["train.py", *flags], output=subprocess.DEVNULL)
    first_checkpoint = os.path.join(workdir, "checkpoints", "ckpt-0001.keras")
    deadline = time.time() + 400
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
    results = {"resumed": (workdir, left, rerun, np.load(out))}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=400)
        results[name] = (tmp / name, process.returncode, stdout, stderr)
    results["job"] = np.load(digits_job) if os.path.exists(digits_job) else None
    return results


@pytest.fixture(scope="module")
def resumed_run(runs):
    return runs["resumed"]


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
    assert "kNN top-1: untrained" in rerun.stdout


def test_step_learning_rate_follows_the_schedule_under_jax(resumed_run):
    """The rerun's TensorBoard record at step 10 (the last of epoch 2, 5 steps an epoch) holds
    that step's rate, which metrics.csv records at the epoch's end, not the rate at the epoch's
    start, which JAX's optimizer variables still hold mid-epoch."""
    workdir, _, _, _ = resumed_run
    paths = sorted(glob.glob(os.path.join(workdir, "tensorboard", "train", "events.out.*")))
    rates = {}
    for path in paths:
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        if "step/learning_rate" in events.Tags()["tensors"]:
            for event in events.Tensors("step/learning_rate"):
                rates[event.step] = float(tf.make_ndarray(event.tensor_proto))
    (epoch_2,) = [row for row in metrics(workdir) if row["epoch"] == "2"]
    assert list(rates) == [10]
    assert rates[10] == pytest.approx(float(epoch_2["learning_rate"]), rel=1e-6)
    (epoch_1,) = [row for row in metrics(workdir) if row["epoch"] == "1"]
    assert rates[10] != pytest.approx(float(epoch_1["learning_rate"]), rel=1e-3)


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


@pytest.mark.parametrize("name", ["digits", "npz"])
def test_trains_without_tensorflow_and_says_what_it_cannot_write(runs, name):
    workdir, code, stdout, stderr = runs[name]
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert [int(row["epoch"]) for row in metrics(workdir)] == [0, 1]
    assert os.path.exists(workdir / "export" / "carl.keras")
    assert not os.path.exists(workdir / "export" / "backbone")
    saved_model_lines = [line for line in stderr.splitlines() if "SavedModel" in line]
    tensorboard_lines = [line for line in stderr.splitlines() if "TensorBoard" in line]
    assert len(saved_model_lines) == 1 and "needs TensorFlow" in saved_model_lines[0]
    assert len(tensorboard_lines) == 1 and "needs TensorFlow" in tensorboard_lines[0]
    assert f"exported the model to {workdir / 'export' / 'carl.keras'}" in stdout


def test_a_finished_run_without_savedmodel_counts_as_finished(runs):
    workdir, _, _, _ = runs["digits"]
    flags = [*FLAGS, "--epochs=1", f"--workdir={workdir}"]
    result = run_under_jax(["train.py", *flags], without_tensorflow=True, timeout=120)
    assert "holds a finished run; nothing to do" in result.stdout


def test_multi_worker_is_refused_under_jax_in_one_line(tmp_path):
    result = run_under_jax(
        ["train.py", *FLAGS, "--strategy=multi_worker", f"--workdir={tmp_path / 'run'}"],
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "strategy multi_worker needs the TensorFlow backend" in line
    assert "under JAX set --strategy to auto" in line  # the field, named as train.py's flag
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_the_step_is_compiled_under_jax_whatever_jit_compile_says(runs):
    """An uncompiled JAX step runs op by op (2x slower on the digits preset): `jit_compile`
    (off in every preset, for TensorFlow's CPU step) does not switch XLA off under JAX."""
    job_outputs = runs["job"]
    assert job_outputs is not None, runs["digits"][3][-3000:]
    assert not job_outputs["preset_jit_compile"]
    assert job_outputs["model_jit_compile"]


def test_evaluate_says_in_one_line_that_it_needs_the_tensorflow_backend(tmp_path):
    result = run_under_jax(
        ["evaluate.py", f"--model={tmp_path}"], without_tensorflow=True, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "KERAS_BACKEND=tensorflow" in lines[0], result.stderr
