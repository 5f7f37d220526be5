"""Faults made for real: SIGKILL, Ctrl-C and SIGTERM, a second train.py on the same workdir,
truncated checkpoints and files, full and read-only disks, symlink loops, odd file names, odd
SavedModel inputs, and what a resume repeats. docs/faults.md sums up what these tests check.

The train.py runs of a fixture are started together (each only waits on its own files), so
each fixture takes about as long as its two longest runs one after the other. The tests that
start train.py or evaluate.py are in the slow tier; the finished run they damage or compare
with is the shared one of tests/conftest.py.
"""

import contextlib
import csv
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from support import ENV, FINISHED_ARGS, FINISHED_EPOCHS, REPO, SMOKE, error_lines

import carl_tf
from carl_tf.data import sources
from carl_tf.data.folder_listing import list_images
from carl_tf.errors import DataError, RunDirectoryError, UsageError
from carl_tf.evaluation.loading import load_model
from carl_tf.method.backbones import build_backbone
from carl_tf.method.schedules import linear_decay
from carl_tf.run import export
from carl_tf.run.callbacks import MetricsRecorder, RunRecorder
from carl_tf.run.rundir import RunDirectory, keras_file_problem

# The shared finished run's flags after SMOKE, and its checkpoints, oldest first (two epochs:
# both are kept).
FINISHED_FLAGS = FINISHED_ARGS[len(SMOKE) :]
CHECKPOINTS = [f"ckpt-{e:04d}.keras" for e in range(1, FINISHED_EPOCHS + 1)]


class Run:
    """A train.py process whose stdout and stderr go to files beside its workdir."""

    def __init__(self, workdir, *args, log=None):
        self.workdir = str(workdir)
        self.command = [sys.executable, "train.py", *SMOKE, f"--workdir={workdir}", *args]
        self.log = log or f"{workdir}.log"
        self.start()

    def start(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT
            )

    def wait(self, timeout=400) -> tuple[int, str]:
        """The exit code and the output (stdout and stderr together)."""
        code = self.process.wait(timeout=timeout)
        with open(self.log) as log:
            return code, log.read()

    def path(self, *names) -> str:
        return os.path.join(self.workdir, *names)


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def epochs_in(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def damage(workdir, finished):
    """A copy of the finished run without its export (so a rerun resumes), ready to damage."""
    shutil.copytree(finished, workdir, ignore=shutil.ignore_patterns("export"))
    return workdir


@pytest.fixture(scope="module")
def runs(finished_digits, tmp_path_factory):
    """Every train.py scenario, run concurrently; maps a name to (exit code, output, workdir).

    first: a 3-epoch run, raced by `second` (the same command) once it holds its workdir;
    "race" records whether `first` was still going when `second` ended and whether its
    config.json was left as it was. Copies of the shared finished run resume with the newest
    checkpoint truncated, without metrics.csv, with a garbage metrics row, or with a truncated
    config.json. (The run SIGKILLed before its first checkpoint is the `stopped` scenario.)
    """
    tmp = tmp_path_factory.mktemp("faults")
    first = Run(tmp / "first", "--epochs=3")
    finished = finished_digits.workdir
    results = {}

    corrupt = damage(tmp / "corrupt", finished)
    os.truncate(corrupt / "checkpoints" / CHECKPOINTS[-1], 100)
    no_metrics = damage(tmp / "no_metrics", finished)
    os.remove(no_metrics / "metrics.csv")
    garbage = damage(tmp / "garbage", finished)
    with open(garbage / "metrics.csv", "a") as f:
        f.write("garbage,row\n")
    bad_config = damage(tmp / "bad_config", finished)
    os.truncate(bad_config / "config.json", 20)

    wait_for(lambda: os.path.exists(first.path("config.json")), "the first run to start")
    config_written = os.stat(first.path("config.json")).st_mtime_ns
    second = Run(tmp / "first", "--epochs=3", log=f"{tmp / 'second'}.log")
    results["second"] = (*second.wait(), first.workdir)
    first_running = first.process.poll() is None

    damaged = {
        name: Run(workdir, *FINISHED_FLAGS)
        for name, workdir in [
            ("corrupt", corrupt),
            ("no_metrics", no_metrics),
            ("garbage", garbage),
            ("bad_config", bad_config),
        ]
    }
    results["first"] = (*first.wait(), first.workdir)
    config_unchanged = os.stat(first.path("config.json")).st_mtime_ns == config_written
    results["race"] = (first_running, config_unchanged)
    assert results["first"][0] == 0, results["first"][1][-3000:]
    for name, run in damaged.items():
        results[name] = (*run.wait(), run.workdir)
    return results


@pytest.mark.slow
def test_second_run_on_a_busy_workdir_is_refused_and_changes_nothing(runs):
    code, output, workdir = runs["second"]
    first_running, config_unchanged = runs["race"]
    assert first_running, "the second run ended while the first was still training"
    assert code == 2 and "Traceback" not in output, output[-3000:]
    (line,) = error_lines(output)
    first_pid = open(f"{workdir}.lock").read().split()[1]
    assert line.startswith("error: ") and f"in use by pid {first_pid} on " in line
    assert config_unchanged, "the refused run rewrote config.json"
    assert epochs_in(workdir) == [0, 1, 2, 3]
    assert os.path.exists(os.path.join(workdir, "export", "carl.keras"))


@pytest.mark.slow
def test_lock_of_a_killed_run_is_no_obstacle_and_history_has_one_row_per_epoch(stopped):
    checkpoints, lock_text, pid, exported = stopped["killed"]
    assert checkpoints == [], "killed before its first checkpoint"
    assert not exported, "killed before it finished"
    assert lock_text.startswith(f"pid {pid} on "), "the dead process's lock file stays"
    # Killed again during epoch 2: after a checkpoint, before the export.
    checkpoints, lock_text, pid, exported = stopped["killed_after_checkpoint"]
    assert checkpoints == ["ckpt-0001.keras"] and not exported
    assert lock_text.startswith(f"pid {pid} on ")
    # The same command then ran on (to its Ctrl-C and its resume) with one row per epoch.
    assert stopped["sigint"][3] == [0, 1]  # not a second epoch-0 row
    code, output, workdir, epochs, _ = stopped["resumed"]
    assert code == 0, output[-3000:]
    assert epochs == list(range(FINISHED_EPOCHS + 1))


@pytest.mark.slow
def test_truncated_newest_checkpoint_resumes_from_the_one_before(runs):
    code, output, workdir = runs["corrupt"]
    assert code == 0, output[-3000:]
    assert "skipping the checkpoint" in output and CHECKPOINTS[-1] in output
    assert f"after epoch {FINISHED_EPOCHS - 1}" in output
    assert epochs_in(workdir) == list(range(FINISHED_EPOCHS + 1))
    assert os.path.exists(os.path.join(workdir, "export", "carl.keras"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, names",
    [
        ("no_metrics", ["metrics.csv", "missing", "--overwrite"]),
        # The header, one row per epoch from 0, then the garbage.
        ("garbage", ["metrics.csv", f"line {FINISHED_EPOCHS + 3}", "--overwrite"]),
        ("bad_config", ["config.json", "damaged", "--overwrite"]),
    ],
)
def test_damaged_run_files_give_one_line_error(runs, case, names):
    code, output, workdir = runs[case]
    assert code == 2 and "Traceback" not in output, output[-3000:]
    (line,) = error_lines(output)
    assert line.startswith("error: ") and all(name in line for name in names), line
    assert not os.path.exists(os.path.join(workdir, "export"))


def test_resume_keeps_one_row_per_epoch_of_a_history_with_repeats(tmp_path):
    """A history written by a version that added an epoch-0 row on every resume is mended."""
    run_dir = RunDirectory(str(tmp_path))
    os.makedirs(run_dir.checkpoint_dir)
    for row in ({"epoch": 0, "knn_top1": 10}, {"epoch": 0, "knn_top1": 11}, {"epoch": 1}):
        run_dir.append_metrics(row)
    run_dir.append_metrics({"epoch": 2, "loss": 1.5})  # after the checkpoint resumed from
    run_dir.keep_metrics_up_to(1)
    assert [(r["epoch"], r["knn_top1"]) for r in run_dir.read_metrics()] == [("0", "11"), ("1", "")]
    run_dir.keep_metrics_up_to(0)
    assert run_dir.read_metrics() == []


@pytest.fixture
def unfinished_copy(finished_run_copy, tmp_path):
    """A copy of the shared run without its export: evaluate.py loads its newest checkpoint."""
    return Path(finished_run_copy(tmp_path / "run", ignore=shutil.ignore_patterns("export")))


def test_evaluation_skips_a_truncated_newest_checkpoint(unfinished_copy):
    os.truncate(unfinished_copy / "checkpoints" / CHECKPOINTS[-1], 100)
    assert load_model(str(unfinished_copy)).weights.endswith(CHECKPOINTS[-2])


def test_evaluation_names_damaged_checkpoints(unfinished_copy):
    for name in CHECKPOINTS[-2:]:
        os.truncate(unfinished_copy / "checkpoints" / name, 100)
    with pytest.raises(UsageError, match="damaged") as raised:
        load_model(str(unfinished_copy))
    assert "File not found" not in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(UsageError, match="damaged.*not a zip") as raised:
        load_model(str(unfinished_copy / "checkpoints" / CHECKPOINTS[-1]))
    assert "File not found" not in str(raised.value)


@pytest.fixture
def small_model():
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1000)])  # 4 MB of weights
    model.compile(optimizer="sgd", loss="mse")
    return model


def fail_after_writing(path, *args, **kwargs):
    """A save that dies of a full disk halfway through its file."""
    with open(path, "wb") as f:
        f.write(b"PK half a zip")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def test_failed_checkpoint_write_leaves_no_temporary_file(tmp_path, small_model, monkeypatch):
    run_dir = RunDirectory(str(tmp_path))
    run_dir.create({"seed": 0}, overwrite=False)
    monkeypatch.setattr(small_model, "save", lambda path: fail_after_writing(path))
    with pytest.raises(RunDirectoryError, match="free space on .*checkpoints") as raised:
        run_dir.save_checkpoint(small_model, 1)
    assert "ckpt-0001.keras" in str(raised.value)
    assert os.listdir(run_dir.checkpoint_dir) == []


def test_ctrl_c_during_a_write_leaves_no_temporary_file(tmp_path, small_model, monkeypatch):
    """Ctrl-C inside a checkpoint's save and inside metrics.csv's fsync, where the real signal
    of `test_ctrl_c_while_checkpointing_leaves_no_temporary_file` rarely lands."""
    run_dir = RunDirectory(str(tmp_path))
    run_dir.create({"seed": 0}, overwrite=False)

    def interrupted(*args):
        raise KeyboardInterrupt

    def save_half_then_interrupted(path):
        with open(path, "wb") as f:
            f.write(b"PK half a zip")
        interrupted()

    monkeypatch.setattr(small_model, "save", save_half_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_dir.save_checkpoint(small_model, 1)
    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_dir.append_metrics({"epoch": 1, "loss": 1.0})
    assert os.listdir(run_dir.checkpoint_dir) == []
    assert sorted(os.listdir(run_dir.path)) == ["checkpoints", "config.json"]


@contextlib.contextmanager
def tiny_disk(path, size="3m"):
    """A 3 MiB tmpfs at `path` (skips where mounting is not allowed); always unmounted."""
    os.makedirs(path)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_full_disk_checkpoint_and_metrics_writes_clean_up(tmp_path, small_model):
    with tiny_disk(tmp_path / "disk") as disk:
        run_dir = RunDirectory(str(disk / "run"))
        run_dir.create({"seed": 0}, overwrite=False)
        run_dir.append_metrics({"epoch": 1, "loss": 1.0})
        with pytest.raises(RunDirectoryError, match="free space on"):
            run_dir.save_checkpoint(small_model, 1)  # 4 MB of weights on a 3 MiB disk
        assert os.listdir(run_dir.checkpoint_dir) == []
        with open(disk / "filler", "wb") as f:  # fill what is left
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        with pytest.raises(RunDirectoryError, match="metrics.csv.*free space on"):
            run_dir.append_metrics({"epoch": 2, "loss": 0.5, "knn_top1": "x" * 100000})
        assert sorted(os.listdir(run_dir.path)) == ["checkpoints", "config.json", "metrics.csv"]
        assert epochs_in(run_dir.path) == [1]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left"), KeyboardInterrupt()])
def test_failed_export_leaves_no_temporary_directory(tmp_path, small_model, monkeypatch, failure):
    def write_then_fail(model, path):
        os.makedirs(path)
        (tmp_path / "export.tmp" / "backbone" / "saved_model.pb").write_bytes(b"half")
        raise failure

    monkeypatch.setattr(export, "export_backbone", write_then_fail)
    expected = RunDirectoryError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as raised:
        export.export_run(small_model, str(tmp_path / "export"))
    if expected is RunDirectoryError:
        assert "export" in str(raised.value) and "free space on" in str(raised.value)
    assert os.listdir(tmp_path) == []


def png(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(path)


def test_symlink_loops_do_not_multiply_images(tmp_path):
    for name in ("a/1.png", "a/sub/2.png", "b/3.png"):
        png(tmp_path / name)
    os.symlink(".", tmp_path / "a" / "self")  # a loop
    os.symlink("..", tmp_path / "a" / "sub" / "up")  # a loop through the parent
    os.symlink("sub", tmp_path / "a" / "again")  # one folder reached twice
    os.symlink("1.png", tmp_path / "a" / "link.png")  # one file reached twice
    paths, labels, classes = list_images("folder:x", str(tmp_path))
    assert classes == ("a", "b")
    assert sorted(os.path.realpath(p) for p in paths) == sorted(
        str(tmp_path / n) for n in ("a/1.png", "a/sub/2.png", "b/3.png")
    )
    assert list(labels) == [0, 0, 1]


def test_one_file_under_two_labels_is_refused(tmp_path):
    png(tmp_path / "a" / "1.png")
    png(tmp_path / "b" / "2.png")
    os.symlink(tmp_path / "a" / "1.png", tmp_path / "b" / "also.png")
    with pytest.raises(DataError, match=r"also\.png.*two labels.*remove one") as raised:
        list_images("folder:x", str(tmp_path))
    assert "\n" not in str(raised.value)


def read(path) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def temporary_files(workdir) -> list[str]:
    """Every `.tmp-*` file and `export.tmp` folder a run left in its workdir."""
    return [
        os.path.join(folder, name)
        for folder, dirs, files in os.walk(workdir)
        for name in dirs + files
        if name.startswith(".tmp-") or name == "export.tmp"
    ]


def checkpoint_weights(path) -> dict[str, np.ndarray]:
    """Every array of a `.keras` checkpoint's weights file, by its path in the file."""
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    arrays = {}

    def keep(name, item):  # returns None: visititems stops at the first other value
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    weights.visititems(keep)
    assert arrays, f"no weights in {path}"
    return arrays


@pytest.fixture(scope="module")
def stopped(finished_digits, tmp_path_factory):
    """Runs stopped by real signals, run concurrently; the resume after a kill, merged into one.

    Maps a name to (exit code, output, workdir, epochs in metrics.csv, checkpoint names), taken
    right after the stop. One run of the shared run's command (FINISHED_FLAGS) is stopped and
    started again three times: SIGKILLed once its epoch-0 row is written, before its first
    checkpoint ("killed": its checkpoints, its lock file's text, its pid, whether it exported);
    the same command, SIGKILLed during epoch 2 once epoch 1's checkpoint is written
    ("killed_after_checkpoint", the same record); the same command, Ctrl-C'd once it trains
    epoch 2 again ("sigint"; a copy of it is kept as `unfinished`); the same command again
    ("resumed"). plain: the shared finished run, never stopped. sigterm: SIGTERM once training
    starts (epoch 1). saving: Ctrl-C the moment a temporary checkpoint file appears.
    """
    tmp = tmp_path_factory.mktemp("stopped")
    sigint = Run(tmp / "sigint", *FINISHED_FLAGS, log=f"{tmp / 'killed'}.log")
    sigterm, saving = (Run(tmp / name) for name in ("sigterm", "saving"))
    results = {}

    def saving_checkpoint():
        folder = saving.path("checkpoints")
        return os.path.isdir(folder) and any(n.startswith(".tmp-") for n in os.listdir(folder))

    def killed_then_started_again(name, log, next_moment):
        """Records the killed run as `name`, then starts its command again logging to `log`."""

        def record_and_restart():
            sigint.process.wait()
            lock_file = f"{sigint.workdir}.lock"
            results[name] = (
                sorted(os.listdir(sigint.path("checkpoints"))),
                open(lock_file).read() if os.path.exists(lock_file) else "",
                sigint.process.pid,
                os.path.exists(sigint.path("export")),
            )
            sigint.log = log
            sigint.start()
            moments[sigint] = next_moment

        return record_and_restart

    def training_again():  # the resumed run's fit has started: epoch 2 is training
        return "pretraining on" in read(sigint.log)

    ctrl_c = (training_again, signal.SIGINT, None)
    kill_after_checkpoint = (
        lambda: os.path.exists(sigint.path("checkpoints", "ckpt-0001.keras")),
        signal.SIGKILL,
        killed_then_started_again("killed_after_checkpoint", f"{tmp / 'sigint'}.log", ctrl_c),
    )
    moments = {
        sigint: (
            lambda: os.path.exists(sigint.path("metrics.csv")),
            signal.SIGKILL,
            killed_then_started_again(
                "killed", f"{tmp / 'killed_again'}.log", kill_after_checkpoint
            ),
        ),
        sigterm: (lambda: "pretraining on" in read(sigterm.log), signal.SIGTERM, None),
        saving: (saving_checkpoint, signal.SIGINT, None),
    }
    while moments:
        for run, (ready, signum, then) in list(moments.items()):
            if ready():
                run.process.send_signal(signum)
            elif run.process.poll() is None:
                continue  # not its moment yet
            else:
                then = None  # it ended before its moment; the tests say how
            del moments[run]
            if then:
                then()
        time.sleep(0.002)
    assert "killed" in results, read(f"{tmp / 'killed'}.log")[-3000:]
    assert "killed_after_checkpoint" in results, read(f"{tmp / 'killed_again'}.log")[-3000:]
    for name, run in [("sigint", sigint), ("sigterm", sigterm), ("saving", saving)]:
        code, output = run.wait()
        ckpts = sorted(os.listdir(run.path("checkpoints")))
        results[name] = (code, output, run.workdir, epochs_in(run.workdir), ckpts)
    shutil.copytree(sigint.workdir, tmp / "unfinished")
    results["unfinished"] = str(tmp / "unfinished")
    sigint.log = f"{tmp / 'resumed'}.log"
    sigint.start()
    code, output = sigint.wait()
    ckpts = sorted(os.listdir(sigint.path("checkpoints")))
    results["resumed"] = (code, output, sigint.workdir, epochs_in(sigint.workdir), ckpts)
    plain = finished_digits.workdir
    results["plain"] = (
        finished_digits.result.returncode,
        finished_digits.result.stdout + finished_digits.result.stderr,
        plain,
        epochs_in(plain),
        sorted(os.listdir(os.path.join(plain, "checkpoints"))),
    )
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, code, line, epochs, checkpoints",
    [
        (
            "sigint",
            130,
            "error: interrupted during epoch 2; run the same command to resume",
            [0, 1],
            ["ckpt-0001.keras"],
        ),
        (
            "sigterm",
            143,
            "error: terminated during epoch 1; run the same command to resume",
            [0],
            [],
        ),
    ],
)
def test_ctrl_c_and_sigterm_name_the_epoch_and_keep_the_finished_ones(
    stopped, case, code, line, epochs, checkpoints
):
    got_code, output, workdir, got_epochs, got_checkpoints = stopped[case]
    assert got_code == code and "Traceback" not in output, output[-3000:]
    assert error_lines(output) == [line]
    assert (got_epochs, got_checkpoints) == (epochs, checkpoints)
    assert temporary_files(workdir) == []


@pytest.mark.slow
def test_the_same_command_resumes_an_interrupted_run(stopped):
    code, output, workdir, epochs, checkpoints = stopped["resumed"]
    assert code == 0, output[-3000:]
    assert "after epoch 1" in output and epochs == [0, 1, 2]
    assert checkpoints == ["ckpt-0001.keras", "ckpt-0002.keras"]
    assert os.path.exists(os.path.join(workdir, "export", "carl.keras"))
    # The schedules continued rather than restarting: lambda where its decay puts each epoch,
    # and the cosine learning rate still falling.
    config = RunDirectory(workdir).read_config()
    rows = [row for row in RunDirectory(workdir).read_metrics() if int(row["epoch"]) > 0]
    for row in rows:
        expected = linear_decay(
            int(row["epoch"]) - 1, config["kl_start"], config["kl_end"], config["kl_decay_epochs"]
        )
        assert float(row["kl_weight"]) == pytest.approx(expected)
    rates = [float(r["learning_rate"]) for r in rows]
    assert all(a > b for a, b in zip(rates, rates[1:]))


@pytest.mark.slow
def test_ctrl_c_while_checkpointing_leaves_no_temporary_file(stopped):
    """Ctrl-C sent as `.tmp-ckpt-0001.keras` appears; it lands in the save or just after it."""
    code, output, workdir, epochs, checkpoints = stopped["saving"]
    assert code == 130 and "Traceback" not in output, output[-3000:]
    (line,) = error_lines(output)
    # Epoch 1 is in progress until its checkpoint is in place, epoch 2 right after.
    assert (
        line
        == f"error: interrupted during epoch {len(checkpoints) + 1}; run the same command to resume"
    )
    assert temporary_files(workdir) == []
    folder = os.path.join(workdir, "checkpoints")
    assert all(keras_file_problem(os.path.join(folder, name)) is None for name in checkpoints)


@pytest.mark.slow
def test_a_resume_repeats_epoch_1s_random_draws_so_later_epochs_differ(stopped):
    """What docs/faults.md says of a resume: up to the checkpoint a resumed run is the
    uninterrupted one (the same rows and bit-identical weights); after it the augmentation
    seeds and the shuffle order restart from the seed, so epoch 2 trains on other draws."""
    plain, resumed = stopped["plain"][2], stopped["resumed"][2]
    rows = [RunDirectory(w).read_metrics() for w in (plain, resumed)]
    measured = [c for c in rows[0][1] if c not in ("epoch", "seconds") and rows[0][1][c]]
    for epoch in (0, 1):  # equal but for the last float32 digit of the running mean loss
        for column in measured if epoch else ["knn_top1"]:
            assert float(rows[1][epoch][column]) == pytest.approx(
                float(rows[0][epoch][column]), rel=1e-5
            ), (epoch, column)
    assert float(rows[1][2]["loss"]) != pytest.approx(float(rows[0][2]["loss"]), rel=1e-4)
    weights = [
        [
            checkpoint_weights(os.path.join(w, "checkpoints", f"ckpt-000{e}.keras"))
            for w in (plain, resumed)
        ]
        for e in (1, 2)
    ]
    for name, value in weights[0][0].items():
        np.testing.assert_array_equal(weights[0][1][name], value, err_msg=name)
    assert any(not np.array_equal(weights[1][1][n], v) for n, v in weights[1][0].items())


class Evaluation(Run):
    """An evaluate.py process (kNN only, for speed) on `model`, logged like `Run`."""

    def __init__(self, model, *args, log):
        self.workdir = str(model)
        self.command = [sys.executable, "evaluate.py", f"--model={model}", "--protocol=knn", *args]
        self.log = log
        self.start()


@contextlib.contextmanager
def read_only_disk(path, holding=None):
    """A tmpfs at `path` holding a copy of the run `holding`, remounted read-only."""
    with tiny_disk(path, size="8m") as disk:
        if holding:
            shutil.copytree(
                holding, disk, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tensorboard")
            )
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if remounted.returncode:
            pytest.skip(f"cannot remount a tmpfs read-only: {remounted.stderr.decode().strip()}")
        yield disk


@pytest.fixture(scope="module")
def read_only(stopped, tmp_path_factory):
    """train.py and evaluate.py on read-only tmpfs disks, run concurrently.

    Maps a name to (exit code, stdout, stderr-and-stdout, path). new_inside: a new run in a
    folder of the read-only disk. new_at: a new run whose workdir is the empty read-only disk
    itself (its lock file beside it is writable). unfinished: the stopped run's copy on a
    read-only disk. evaluate: evaluate.py on a finished run on a read-only disk; plots: the
    same with --output on a writable disk, so only the plots fail.
    """
    tmp = tmp_path_factory.mktemp("read_only")
    finished = stopped["plain"][2]
    with contextlib.ExitStack() as stack:
        empty = stack.enter_context(read_only_disk(tmp / "empty"))
        unfinished = stack.enter_context(read_only_disk(tmp / "unfinished", stopped["unfinished"]))
        done = stack.enter_context(read_only_disk(tmp / "finished", finished))
        runs = {
            "new_inside": Run(empty / "new", log=f"{tmp / 'new_inside'}.log"),
            "new_at": Run(empty, log=f"{tmp / 'new_at'}.log"),
            "unfinished": Run(unfinished, *FINISHED_FLAGS, log=f"{tmp / 'unfinished'}.log"),
            "evaluate": Evaluation(done, log=f"{tmp / 'evaluate'}.log"),
            "plots": Evaluation(done, f"--output={tmp / 'e.json'}", log=f"{tmp / 'plots'}.log"),
        }
        return {name: (*run.wait(), run.workdir) for name, run in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, path",
    [("new_inside", "new.lock"), ("new_at", "checkpoints"), ("unfinished", "config.json")],
)
def test_train_on_a_read_only_disk_names_the_path_and_the_fix(read_only, case, path):
    code, output, workdir = read_only[case]
    assert code == 2 and "Traceback" not in output, output[-3000:]
    (line,) = error_lines(output)
    assert line.startswith(f"error: cannot write to {os.path.dirname(workdir)}") and path in line
    assert line.endswith(": read-only file system; choose a writable --workdir"), line


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, problem",
    [
        (
            "evaluate",
            "figures not saved: cannot write to {}/evaluation.json: read-only file "
            "system; pass --output=PATH to write it elsewhere",
        ),
        (
            "plots",
            "plots not drawn: cannot write to {}/plots: Read-only file system; pass "
            "--plots_dir=DIR or --plots=False",
        ),
    ],
)
def test_evaluate_on_a_read_only_run_prints_its_figures_then_one_line(read_only, case, problem):
    code, output, workdir = read_only[case]
    assert code == 2 and "Traceback" not in output, output[-3000:]
    assert error_lines(output) == [f"error: {problem.format(workdir)}"]
    lines = output.splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("kNN top-1 % (k=200"))
    assert table < lines.index(f"error: {problem.format(workdir)}")
    assert float(lines[table].split()[-1]) > 0


def test_a_file_name_that_is_not_utf8_is_read_like_any_other(tmp_path):
    image = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(image, format="PNG")
    for name in (b"\xff\xfe.png", b"ok.png"):
        handle = os.open(os.path.join(os.fsencode(tmp_path), name), os.O_WRONLY | os.O_CREAT)
        os.write(handle, image.getvalue())
        os.close(handle)
    for budget in (sources.DEFAULT_MEMORY_BUDGET_BYTES, 1):  # held in memory, and streamed
        source = sources.load_source(f"folder:{tmp_path}", split="all", memory_budget_bytes=budget)
        images = source.arrays[0] if source.arrays else [x for x, _ in source.stream(False, 0)]
        assert len(images) == 2 and all(np.all(np.asarray(x) == 7) for x in images)


def test_a_text_file_as_npz_is_named_not_an_npz_archive(tmp_path):
    (tmp_path / "x.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"x\.npz is not an npz archive.*np\.savez") as raised:
        sources.load_source(f"npz:{tmp_path / 'x.npz'}", split="all")
    assert "pickle" not in str(raised.value) and "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The SavedModel signatures of a tiny exported CARL (32 px, D=32 features, K=10)."""
    model = carl_tf.CARL(
        build_backbone("resnet18", width=4, image_size=32),
        num_prototypes=10,
        augmenter=carl_tf.SimCLRAugment(image_size=32),
    )
    model(np.zeros((2, 32, 32, 3), "float32"))
    path = str(tmp_path_factory.mktemp("saved_model") / "backbone")
    export.export_backbone(model, path)
    return tf.saved_model.load(path).signatures


@pytest.mark.parametrize(
    "signature, key, width", [("serving_default", "features", 32), ("assign", "probabilities", 10)]
)
def test_saved_model_signatures_hold_to_their_input_spec(saved_model, signature, key, width):
    call = saved_model[signature]
    assert call(images=tf.zeros((2, 32, 32, 3)))[key].shape == (2, width)
    assert call(images=tf.zeros((0, 32, 32, 3)))[key].shape == (0, width)
    for shape in [(32, 32, 3), (2, 16, 16, 3), (2, 32, 32, 1)]:
        given = ",".join(map(str, shape))
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=rf"\[{given}\] is not compatible with expected shape \[\?,32,32,3\]",
        ):
            call(images=tf.zeros(shape))


def test_recorders_write_finite_epochs_and_only_the_run_recorder_checkpoints(tmp_path, small_model):
    """MetricsRecorder (the SimCLR baseline's) and RunRecorder (train.py's) share one row format;
    an epoch with a non-finite loss leaves neither a row nor a checkpoint."""
    for recorder_class, name in ((MetricsRecorder, "metrics_only"), (RunRecorder, "run")):
        run_dir = RunDirectory(str(tmp_path / name))
        run_dir.create({"seed": 0}, overwrite=False)
        recorder = recorder_class(run_dir)
        recorder.set_model(small_model)
        for epoch, loss in enumerate((2.0, float("nan"), 1.5)):
            recorder.on_epoch_begin(epoch)
            recorder.on_epoch_end(epoch, {"loss": loss})
        rows = run_dir.read_metrics()
        assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "2"), ("3", "1.5")]
        assert all(float(r["learning_rate"]) == pytest.approx(0.01) for r in rows)
        checkpointed = sorted(epoch for epoch, _ in run_dir.checkpoints())
        assert checkpointed == ([1, 3] if recorder_class is RunRecorder else [])
