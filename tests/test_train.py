"""train.py end to end on the offline digits (the shared run of tests/conftest.py): run
directory, export, bad input; the runs that train again are in the slow tier. The resume after
SIGKILL is tests/test_faults.py's `stopped` scenario."""

import json
import os
import shutil
import subprocess
import sys

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from support import ENV, FINISHED_ARGS, FINISHED_EPOCHS, REPO, SMOKE, metrics, train

import carl_tf
from carl_tf import CARL
from carl_tf.configs import digits
from carl_tf.errors import CarlError
from carl_tf.run.rundir import RunDirectory
from carl_tf.training import pretrain as training

LAST_TWO_CHECKPOINTS = [f"ckpt-{e:04d}.keras" for e in (FINISHED_EPOCHS - 1, FINISHED_EPOCHS)]


@pytest.fixture(scope="module")
def finished_run(finished_digits, finished_run_copy, tmp_path_factory):
    """A copy of the shared finished run, and the train.py process that trained it."""
    workdir = finished_run_copy(tmp_path_factory.mktemp("train") / "digits")
    return workdir, finished_digits.result


def test_run_writes_metrics_checkpoints_and_exports(finished_run):
    workdir, result = finished_run
    rows = metrics(workdir)
    assert [int(r["epoch"]) for r in rows] == list(range(FINISHED_EPOCHS + 1))
    assert rows[0]["knn_top1"] and rows[-1]["knn_top1"]  # before and after training
    for row in rows[1:]:
        assert np.isfinite(float(row["loss"])) and float(row["prototypes_in_use"]) >= 1
        assert float(row["learning_rate"]) >= 0
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == LAST_TWO_CHECKPOINTS
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


@pytest.mark.slow
def test_rerun_of_a_finished_run_changes_nothing(finished_run):
    workdir, _ = finished_run
    before = os.stat(os.path.join(workdir, "metrics.csv")).st_mtime_ns
    result = train(*FINISHED_ARGS, f"--workdir={workdir}")
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert os.stat(os.path.join(workdir, "metrics.csv")).st_mtime_ns == before


def test_a_worker_resumes_in_step_with_the_chief(finished_run, tmp_path, monkeypatch):
    """A worker whose own newest checkpoint is an epoch ahead of the chief's (a crash fell
    between their writes) resumes from the chief's epoch, so both restart in step."""
    chief_dir, worker_dir = tmp_path / "run", tmp_path / "run.workertemp_worker_1"
    for copy in (chief_dir, worker_dir):
        shutil.copytree(finished_run[0], copy, ignore=shutil.ignore_patterns("export"))
    # The chief died before writing its newest checkpoint.
    os.remove(chief_dir / "checkpoints" / LAST_TWO_CHECKPOINTS[1])
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
    assert resumed_at == [FINISHED_EPOCHS - 1]
    assert not worker_dir.exists(), "a worker removes its scratch directory when done"


@pytest.mark.slow
def test_folder_with_damaged_files_trains_and_names_them_once(tmp_path):
    """The training split is decoded once, for training and the kNN monitor's bank alike, so
    each damaged file is named in one warning and the decoders' own messages stay held back."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "images" / label)
        for i in range(40):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    # A JPEG that ends right after its start-of-scan header: libjpeg prints "Input file read
    # error" on its own.
    Image.fromarray(pixels).save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    scan = whole.index(b"\xff\xda")
    end = scan + 2 + int.from_bytes(whole[scan + 2 : scan + 4], "big")
    (tmp_path / "images" / "a" / "cut.jpg").write_bytes(whole[:end])
    (tmp_path / "images" / "b" / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = train(
        *SMOKE, f"--dataset=folder:{tmp_path / 'images'}", f"--workdir={tmp_path / 'run'}",
        "--epochs=1", "--batch_size=16", "--image_size=16", "--holdout=0.25", "--knn_every=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kNN top-1 of the untrained backbone" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "could not be decoded" in line]
    named = " ".join(warnings)
    assert named.count("cut.jpg") == 1 and named.count("broken.jpg") == 1, result.stderr
    assert "JPEG" not in result.stderr.replace("cut.jpg", "").replace("broken.jpg", "")
    assert "Input file read error" not in result.stderr


# Each bad input: its train.py flags, the same as config fields, and a part of the message.
BAD_INPUTS = {
    "unknown dataset": (
        ["--dataset=no_such_dataset", "--holdout=0"],
        {"dataset": "no_such_dataset", "holdout": 0.0},
        "no_such_dataset",
    ),
    "missing folder": (
        ["--dataset=folder:/no/such/folder"],
        {"dataset": "folder:/no/such/folder"},
        "/no/such/folder",
    ),
    "empty folder": (
        ["--dataset=folder:{tmp}/empty"],
        {"dataset": "folder:{tmp}/empty"},
        "holds no",
    ),
    "npz without x": (["--dataset=npz:{tmp}/no_x.npz"], {"dataset": "npz:{tmp}/no_x.npz"}, "'x'"),
    "zero epochs": (["--epochs=0"], {"epochs": 0}, "epochs"),
    "zero batch": (["--batch_size=0"], {"batch_size": 0}, "batch_size"),
    "one prototype": (["--num_prototypes=1"], {"num_prototypes": 1}, "num_prototypes"),
    "negative kl_start": (["--kl_start=-1"], {"kl_start": -1.0}, "kl_start"),
    "negative kl_end": (["--kl_end=-0.5"], {"kl_end": -0.5}, "kl_end"),
    "batch over dataset": (["--batch_size=5000"], {"batch_size": 5000}, "batch size"),
    "unknown flag": (["--no_such_flag=1"], None, "no_such_flag"),  # absl's: a process only
    "unknown precision": (
        ["--config.precision=float8"],
        {"precision": "float8"},
        "mixed_bfloat16",
    ),
    "negative collapse_patience": (
        ["--config.collapse_patience=-1"],
        {"collapse_patience": -1},
        "collapse_patience",
    ),
}
# The cases also run as train.py processes: absl's flag error, a config error and a data error,
# each one `error:` line and exit code 2 (the rest raise the same messages in
# `test_bad_input_raises_a_one_line_error`).
PROCESS_CASES = ["unknown flag", "zero epochs", "missing folder"]


def _bad_input_files(tmp):
    os.makedirs(tmp / "empty", exist_ok=True)
    np.savez(tmp / "no_x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("case", [c for c, (_, fields, _) in BAD_INPUTS.items() if fields])
def test_bad_input_raises_a_one_line_error(tmp_path, case):
    """`carl_tf.pretrain` on each bad config: the message train.py prints, raised where it is
    made (validate_config or the source loader), and nothing written."""
    _bad_input_files(tmp_path)
    _, fields, message = BAD_INPUTS[case]
    config = digits.get_config("smoke")
    for field, value in fields.items():
        config[field] = value.format(tmp=tmp_path) if isinstance(value, str) else value
    with pytest.raises(CarlError) as raised:
        carl_tf.pretrain(config, str(tmp_path / "run"))
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not os.path.exists(tmp_path / "run"), "nothing is written for a refused config"


def test_pretrain_names_the_config_field_and_train_py_the_flag(tmp_path):
    """The source's error names `batch_size` to `carl_tf.pretrain`'s caller; train.py maps the
    field to its flag (`carl_tf.cli.common.run_main`) and prints `--batch_size`."""
    from carl_tf.cli.train import flag_name

    config = digits.get_config("smoke")
    config.batch_size = 5000
    with pytest.raises(CarlError) as raised:
        carl_tf.pretrain(config, str(tmp_path / "run"))
    assert raised.value.field == "batch_size"
    assert str(raised.value).endswith("; lower batch_size") and "--" not in str(raised.value)
    assert str(raised.value.with_flags(flag_name)).endswith("; lower --batch_size")


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Runs the bad commands of PROCESS_CASES at once (they only start up and fail)."""
    tmp = tmp_path_factory.mktemp("bad")
    _bad_input_files(tmp)
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
        for case, (args, _, _) in BAD_INPUTS.items()
        if case in PROCESS_CASES
    }
    results = {case: (p.communicate(timeout=300), p.returncode) for case, p in processes.items()}
    return tmp, results


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_bad_input_gives_one_line_error(bad_input_results, case):
    tmp, results = bad_input_results
    (_, stderr), returncode = results[case]
    assert returncode == 2
    assert BAD_INPUTS[case][2] in stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-2000:]
    assert not os.path.exists(tmp / case), "nothing is written for a refused command"


@pytest.mark.slow
def test_config_change_on_existing_workdir_is_refused(finished_run):
    workdir, _ = finished_run
    result = train(*FINISHED_ARGS, f"--workdir={workdir}", "--learning_rate=0.2")
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert "learning_rate 0.4 -> 0.2" in result.stderr
    assert [int(r["epoch"]) for r in metrics(workdir)] == list(range(FINISHED_EPOCHS + 1))


def test_config_change_on_existing_workdir_is_refused_by_the_run_directory(finished_run):
    """The message for a changed setting, raised by `RunDirectory.check_config`: it names the
    `overwrite` and `workdir` arguments of `carl_tf.pretrain`, and train.py their flags."""
    workdir, _ = finished_run
    with open(os.path.join(workdir, "config.json")) as f:
        record = json.load(f)
    record.pop("resolved_precision", None)
    with pytest.raises(CarlError) as raised:
        RunDirectory(workdir).check_config({**record, "learning_rate": 0.2}, None)
    assert "learning_rate 0.4 -> 0.2" in str(raised.value)
    assert str(raised.value).endswith("set overwrite to start afresh, or choose another workdir")
    flagged = str(raised.value.with_flags(lambda field: f"--{field}"))
    assert flagged.endswith("set --overwrite to start afresh, or choose another --workdir")
    assert "\n" not in str(raised.value)
    assert [int(r["epoch"]) for r in metrics(workdir)] == list(range(FINISHED_EPOCHS + 1))


def test_nan_loss_stops_with_a_message_and_no_checkpoint(tmp_path):
    result = train(*SMOKE, f"--workdir={tmp_path}", "--learning_rate=1e12", "--knn_every=0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "NaN" in result.stderr and "--learning_rate" in result.stderr
    assert not os.listdir(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "export")


@pytest.mark.slow
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


@pytest.mark.slow
def test_dataset_flag_picks_a_preset_and_keeps_its_data(tmp_path):
    """--dataset=PRESET trains on the preset's own source (cifar10_cpu reads TFDS's cifar10)."""
    result = train(
        "--dataset=cifar10_cpu", f"--workdir={tmp_path / 'run'}", f"--data_dir={tmp_path / 'tfds'}"
    )
    assert result.returncode == 2 and "TFDS dataset cifar10 is not prepared" in result.stderr
    assert not os.path.exists(tmp_path / "run"), "a data error writes nothing"


@pytest.mark.slow
def test_overwrite_restarts_a_finished_run(tmp_path):
    args = [*SMOKE, f"--workdir={tmp_path}", "--epochs=1", "--knn_every=0"]
    assert train(*args).returncode == 0
    (tmp_path / "marker").write_text("from the first run")
    result = train(*args, "--epochs=2", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "marker").exists()
    assert [int(r["epoch"]) for r in metrics(tmp_path)] == [1, 2]
