"""train.py end to end on the offline digits: run directory, export, resume after SIGKILL, bad input."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from carl_tf import CARL
from carl_tf.method.schedules import linear_decay
from carl_tf.training import pretrain as training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config=configs/digits.py:smoke"]


# train.py sets its own TensorFlow log level, as a user's shell would leave it to.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def train(*args, timeout=300):
    """Runs train.py and returns the finished process (stdout and stderr captured)."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("digits"))
    result = train(*SMOKE, f"--workdir={workdir}", "--epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_run_writes_metrics_checkpoints_and_exports(finished_run):
    workdir, result = finished_run
    rows = metrics(workdir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[0]["knn_top1"] and rows[-1]["knn_top1"]  # before and after training
    for row in rows[1:]:
        assert np.isfinite(float(row["loss"])) and float(row["prototypes_in_use"]) >= 1
        assert float(row["learning_rate"]) >= 0
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "ckpt-0002.keras",
        "ckpt-0003.keras",
    ]
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert os.path.exists(os.path.join(workdir, "export", "carl.keras"))
    assert "kNN top-1: untrained" in result.stdout


def test_saved_model_matches_keras_backbone_without_carl_tf(finished_run):
    import keras

    workdir, _ = finished_run
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    loaded = tf.saved_model.load(os.path.join(workdir, "export", "backbone"))
    features = loaded.signatures["serving_default"](images=tf.constant(images))["features"]
    model = keras.models.load_model(os.path.join(workdir, "export", "carl.keras"))
    assert features.dtype == tf.float32
    np.testing.assert_allclose(features, model.backbone(images, training=False), atol=1e-5)
    probabilities = loaded.signatures["assign"](images=tf.constant(images))["probabilities"]
    # Under bfloat16 (--precision=auto on a CPU with native bfloat16) the graphs of the two
    # paths fuse the head's ops differently, each rounding to bfloat16's 8-bit mantissa.
    bfloat16 = model.projection_head.compute_dtype == "bfloat16"
    np.testing.assert_allclose(
        probabilities, model.predict(images, verbose=0), rtol=3e-2 if bfloat16 else 0, atol=1e-5
    )


def test_rerun_of_a_finished_run_changes_nothing(finished_run):
    workdir, _ = finished_run
    before = os.stat(os.path.join(workdir, "metrics.csv")).st_mtime_ns
    result = train(*SMOKE, f"--workdir={workdir}", "--epochs=3")
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert os.stat(os.path.join(workdir, "metrics.csv")).st_mtime_ns == before


def test_sigkill_then_same_command_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    command = [
        sys.executable, "train.py", *SMOKE, f"--workdir={workdir}", "--epochs=8",
        "--kl_decay_epochs=6", "--knn_every=0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-0002.keras")):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(os.path.join(workdir, "export")), "killed before it finished"
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(workdir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    for row in rows:
        expected = linear_decay(int(row["epoch"]) - 1, 4.0, 1.5, 6)
        assert float(row["kl_weight"]) == pytest.approx(expected)
    # The cosine schedule continued rather than restarting: the rate keeps falling.
    rates = [float(r["learning_rate"]) for r in rows]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_a_worker_resumes_in_step_with_the_chief(finished_run, tmp_path, monkeypatch):
    """A worker whose own newest checkpoint is an epoch ahead of the chief's (a crash fell
    between their writes) resumes from the chief's epoch, so both restart in step."""
    chief_dir, worker_dir = tmp_path / "run", tmp_path / "run.workertemp_worker_1"
    for copy in (chief_dir, worker_dir):
        shutil.copytree(finished_run[0], copy, ignore=shutil.ignore_patterns("export"))
    os.remove(chief_dir / "checkpoints" / "ckpt-0003.keras")  # the chief died before writing it
    with open(chief_dir / "config.json") as f:
        config = ml_collections.ConfigDict(json.load(f))
    monkeypatch.setattr(training, "is_chief", lambda strategy: False)
    monkeypatch.setattr(training, "worker_workdir", lambda workdir, strategy: str(worker_dir))
    resumed_at = []
    monkeypatch.setattr(CARL, "fit", lambda self, *a, **kw: resumed_at.append(kw["initial_epoch"]))
    try:
        training.pretrain(config, str(chief_dir))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert resumed_at == [2]
    assert not worker_dir.exists(), "a worker removes its scratch directory when done"


def test_folder_with_a_corrupt_file_trains_and_reports_it(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "images" / label)
        for i in range(40):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = train(
        *SMOKE, f"--dataset=folder:{tmp_path / 'images'}", f"--workdir={tmp_path / 'run'}",
        "--epochs=1", "--batch_size=16", "--image_size=16", "--knn_every=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1" in result.stderr and "skipped" in result.stderr.lower()


BAD_INPUTS = {
    "unknown dataset": (["--dataset=no_such_dataset", "--holdout=0"], "no_such_dataset"),
    "missing folder": (["--dataset=folder:/no/such/folder"], "/no/such/folder"),
    "empty folder": (["--dataset=folder:{tmp}/empty"], "holds no"),
    "npz without x": (["--dataset=npz:{tmp}/no_x.npz"], "'x'"),
    "zero epochs": (["--epochs=0"], "epochs"),
    "zero batch": (["--batch_size=0"], "batch_size"),
    "one prototype": (["--num_prototypes=1"], "num_prototypes"),
    "negative kl_start": (["--kl_start=-1"], "kl_start"),
    "negative kl_end": (["--kl_end=-0.5"], "kl_end"),
    "batch over dataset": (["--batch_size=5000"], "batch size"),
    "unknown flag": (["--no_such_flag=1"], "no_such_flag"),
    "unknown precision": (["--config.precision=float8"], "mixed_bfloat16"),
    "negative collapse_patience": (["--config.collapse_patience=-1"], "collapse_patience"),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Runs every bad command at once (they only start up and fail), keyed like BAD_INPUTS."""
    tmp = tmp_path_factory.mktemp("bad")
    os.makedirs(tmp / "empty")
    np.savez(tmp / "no_x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    processes = {
        case: subprocess.Popen(
            [sys.executable, "train.py", *SMOKE, f"--workdir={tmp / case}"]
            + [a.format(tmp=tmp) for a in args],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (args, _) in BAD_INPUTS.items()
    }
    results = {case: (p.communicate(timeout=300), p.returncode) for case, p in processes.items()}
    return tmp, results


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_error(bad_input_results, case):
    tmp, results = bad_input_results
    (_, stderr), returncode = results[case]
    assert returncode == 2
    assert BAD_INPUTS[case][1] in stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-2000:]
    assert not os.path.exists(tmp / case), "nothing is written for a refused command"


def test_config_change_on_existing_workdir_is_refused(finished_run):
    workdir, _ = finished_run
    result = train(*SMOKE, f"--workdir={workdir}", "--epochs=3", "--learning_rate=0.2")
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert "learning_rate 0.1 -> 0.2" in result.stderr
    assert [int(r["epoch"]) for r in metrics(workdir)] == [0, 1, 2, 3]  # untouched


def test_nan_loss_stops_with_a_message_and_no_checkpoint(tmp_path):
    result = train(*SMOKE, f"--workdir={tmp_path}", "--learning_rate=1e12", "--knn_every=0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "NaN" in result.stderr and "--learning_rate" in result.stderr
    assert not os.listdir(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "export")


def test_collapse_stops_the_run_with_a_message_and_no_export(tmp_path):
    # Without the KL term the consistency loss alone collapses onto one prototype (section 2.3).
    result = train(*SMOKE, f"--workdir={tmp_path}", "--kl_start=0", "--kl_end=0", "--epochs=6")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "collapsed" in errors[0] and "--learning_rate" in errors[0]
    rows = metrics(tmp_path)
    assert len(rows) < 1 + 6, "stopped before the last epoch"
    assert [float(r["prototypes_in_use"]) < 6.4 for r in rows[-2:]] == [True, True]
    assert not os.path.exists(tmp_path / "export")


def test_dataset_flag_picks_a_preset_and_keeps_its_data(tmp_path):
    """--dataset=PRESET trains on the preset's own source (cifar10_cpu names an image folder)."""
    result = train("--dataset=cifar10_cpu", f"--workdir={tmp_path / 'run'}", "--batch_size=999999")
    assert result.returncode == 2 and "/tmp/cifar10/train" in result.stderr
    assert not os.path.exists(tmp_path / "run"), "a data error writes nothing"


def test_overwrite_restarts_a_finished_run(tmp_path):
    args = [*SMOKE, f"--workdir={tmp_path}", "--epochs=1", "--knn_every=0"]
    assert train(*args).returncode == 0
    (tmp_path / "marker").write_text("from the first run")
    result = train(*args, "--epochs=2", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "marker").exists()
    assert [int(r["epoch"]) for r in metrics(tmp_path)] == [1, 2]
