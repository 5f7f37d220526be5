"""Training a finished run longer: refused without a choice, then `--extend=rescale|restart`."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from carl_tf.method.schedules import linear_decay

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--config=digits:smoke", "--knn_every=0", "--epochs=3"]
LONGER = ["--config=digits:smoke", "--knn_every=0", "--epochs=5"]
STEPS, PEAK = 22, 0.1 * 64 / 256  # digits smoke: 1,438 images at batch 64; lr 0.1 at 256


def start(*args):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def rows(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 3-epoch run, then: refused at 5 epochs, extended both ways side by side."""
    base = tmp_path_factory.mktemp("extend")
    first = start(*SHORT, f"--workdir={base / 'short'}")
    assert first.wait() == 0, first.communicate()[1][-2000:]
    for name in ("refused", "rescale", "restart"):
        shutil.copytree(base / "short", base / name)
    before = (base / "refused" / "config.json").read_text()
    processes = {
        "refused": start(*LONGER, f"--workdir={base / 'refused'}"),
        "rescale": start(*LONGER, f"--workdir={base / 'rescale'}", "--extend=rescale"),
        "restart": start(*LONGER, f"--workdir={base / 'restart'}", "--extend=restart"),
    }
    done = {name: (p.wait(), *p.communicate()) for name, p in processes.items()}
    again = start(*LONGER, f"--workdir={base / 'restart'}", "--extend=restart")
    done["again"] = (again.wait(), *again.communicate())
    return base, done, before


def test_more_epochs_without_a_choice_is_refused_and_changes_nothing(runs):
    base, done, before = runs
    code, _, err = done["refused"]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "--extend=rescale" in line and "--extend=restart" in line
    assert (base / "refused" / "config.json").read_text() == before
    assert [r["epoch"] for r in rows(base / "refused")] == ["1", "2", "3"]


@pytest.mark.parametrize("mode", ["rescale", "restart"])
def test_an_extended_run_trains_the_added_epochs_and_records_how(runs, mode):
    base, done, _ = runs
    code, out, err = done[mode]
    assert code == 0, err[-2000:]
    assert "extending the 3-epoch run to 5 epochs" in err and f"--extend={mode}" in err
    history = rows(base / mode)
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4, 5]
    with open(base / mode / "config.json") as f:
        record = json.load(f)
    assert record["epochs"] == 5
    assert record["resolved_precision"] in ("float32", "mixed_bfloat16")
    assert record["extensions"] == [{"from_epochs": 3, "to_epochs": 5, "schedules": mode}]
    assert os.path.isfile(base / mode / "export" / "carl.keras")
    assert not os.path.exists(base / mode / "export.previous")
    rate_after_epoch_4 = float(history[3]["learning_rate"])
    if mode == "rescale":
        # The 5-epoch cosine at the end of epoch 4; lambda decays over 5 * 2 // 3 = 3 epochs.
        expected = PEAK * 0.5 * (1 + math.cos(math.pi * 4 / 5))
        decay = 3
    else:
        # A new 2-epoch cycle from the peak, half-way at the end of epoch 4; lambda as it was.
        expected = PEAK * 0.5 * (1 + math.cos(math.pi * 1 / 2))
        decay = 2
    assert rate_after_epoch_4 == pytest.approx(expected, rel=1e-4)
    assert record["kl_decay_epochs"] == decay
    for row in history:
        epoch = int(row["epoch"])
        if epoch > 3:
            assert float(row["kl_weight"]) == pytest.approx(linear_decay(epoch - 1, 4, 1.5, decay))


def test_the_extended_command_again_finds_the_run_finished(runs):
    code, out, _ = runs[1]["again"]
    assert code == 0 and "nothing to do" in out
