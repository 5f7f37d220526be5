"""Training a finished run longer: refused without a choice, then `--extend=rescale|restart`."""

import csv
import json
import math
import os

import pytest
import support
from support import FINISHED_EPOCHS, FINISHED_LEARNING_RATE, SMOKE

from carl_tf.method.schedules import linear_decay

# Training processes: the slow tier.
pytestmark = pytest.mark.slow
SHORT, LONG = FINISHED_EPOCHS, FINISHED_EPOCHS + 2  # the shared run, then two epochs more
LONGER = [*SMOKE, f"--learning_rate={FINISHED_LEARNING_RATE}", f"--epochs={LONG}"]
PEAK = FINISHED_LEARNING_RATE * 64 / 256  # digits smoke: batch 64; the rate is given at 256


def start(*args):
    return support.start("train.py", *args)


def rows(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(finished_run_copy, tmp_path_factory):
    """The shared finished run (SHORT epochs), then: refused at LONG epochs, extended both
    ways side by side."""
    base = tmp_path_factory.mktemp("extend")
    for name in ("refused", "rescale", "restart"):
        finished_run_copy(base / name)
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
    assert [int(r["epoch"]) for r in rows(base / "refused")] == list(range(SHORT + 1))


@pytest.mark.parametrize("mode", ["rescale", "restart"])
def test_an_extended_run_trains_the_added_epochs_and_records_how(runs, mode):
    base, done, _ = runs
    code, out, err = done[mode]
    assert code == 0, err[-2000:]
    assert f"extending the {SHORT}-epoch run to {LONG} epochs" in err and f"(extend={mode})" in err
    history = rows(base / mode)
    assert [int(r["epoch"]) for r in history] == list(range(LONG + 1))  # kNN at epoch 0
    with open(base / mode / "config.json") as f:
        record = json.load(f)
    assert record["epochs"] == LONG
    assert record["resolved_precision"] in ("float32", "mixed_bfloat16")
    assert record["extensions"] == [{"from_epochs": SHORT, "to_epochs": LONG, "schedules": mode}]
    assert os.path.isfile(base / mode / "export" / "carl.keras")
    assert not os.path.exists(base / mode / "export.previous")
    (row,) = [r for r in history if int(r["epoch"]) == LONG - 1]
    rate_before_the_last_epoch = float(row["learning_rate"])
    if mode == "rescale":
        # The LONG-epoch cosine at the end of epoch LONG - 1; lambda decays over LONG * 2 // 3.
        expected = PEAK * 0.5 * (1 + math.cos(math.pi * (LONG - 1) / LONG))
        decay = LONG * 2 // 3
    else:
        # A new 2-epoch cycle from the peak, half-way at the end of epoch LONG - 1; lambda as
        # it was (SHORT * 2 // 3).
        expected = PEAK * 0.5 * (1 + math.cos(math.pi * 1 / 2))
        decay = SHORT * 2 // 3
    assert rate_before_the_last_epoch == pytest.approx(expected, rel=1e-4)
    assert record["kl_decay_epochs"] == decay
    for row in history:
        epoch = int(row["epoch"])
        if epoch > SHORT:
            assert float(row["kl_weight"]) == pytest.approx(linear_decay(epoch - 1, 4, 1.5, decay))


def test_the_extended_command_again_finds_the_run_finished(runs):
    code, out, _ = runs[1]["again"]
    assert code == 0 and "nothing to do" in out
