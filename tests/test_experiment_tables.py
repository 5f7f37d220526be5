"""The tables of docs/results.md: experiments/seeded_rows.py's noise rule and summarize.py --rows."""

import json
import math
import os
import statistics
import sys

import numpy as np
import pytest

EXPERIMENTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"
)
sys.path.insert(0, EXPERIMENTS)

import seeded_rows  # noqa: E402
import summarize  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    """An empty docs/results/ for the two modules, and a writer of probe files into it."""
    monkeypatch.setattr(seeded_rows, "RESULTS", str(tmp_path))

    def write(name, knn, linear, one_record_a_line=False):
        figures = {"knn_top1": knn, "linear_top1": linear}
        with open(tmp_path / f"{name}.probe.json", "w") as f:
            if one_record_a_line:  # the older format: a record per backbone
                for backbone, offset in (("untrained", -10.0), ("trained", 0.0)):
                    record = {k: v + offset for k, v in figures.items()}
                    f.write(json.dumps({"backbone": backbone, **record}) + "\n")
            else:
                json.dump({**figures, "settings": {"model": "runs/x"}}, f, indent=2)

    return write


def test_pooled_sd_equals_numpy_over_rows_of_unequal_size():
    rows = [{"knn_top1": [1.0, 2.0, 4.0]}, {"knn_top1": [10.0, 13.0]}, {"knn_top1": [7.0]}]
    deviations = np.concatenate([np.array(r["knn_top1"]) - np.mean(r["knn_top1"]) for r in rows])
    expected = math.sqrt(np.sum(deviations**2) / ((3 - 1) + (2 - 1)))
    assert seeded_rows.pooled_sd(rows, "knn_top1") == pytest.approx(expected)
    assert math.isnan(seeded_rows.pooled_sd([{"knn_top1": [3.0]}], "knn_top1"))


def test_threshold_is_twice_the_standard_error_of_a_difference_of_means():
    assert seeded_rows.threshold(1.5, 3, 3) == pytest.approx(2 * 1.5 * math.sqrt(2 / 3))
    assert seeded_rows.threshold(1.0, 1, 4) == pytest.approx(2 * math.sqrt(1.25))


def test_probe_reads_both_formats_and_takes_the_trained_record(results):
    results("new", 35.5, 39.0)
    results("old", 33.0, 37.0, one_record_a_line=True)
    assert seeded_rows.probe("new")["knn_top1"] == 35.5
    assert seeded_rows.probe("old")["linear_top1"] == 37.0
    assert seeded_rows.probe("absent") is None


def test_rows_table_bolds_only_differences_beyond_the_noise(results, monkeypatch, capsys):
    monkeypatch.setattr(
        seeded_rows,
        "ROWS",
        {"ref": ["r0", "r1", "r2"], "far": ["f0", "f1", "f2"], "near": ["n0", "n1", "n2"]},
    )
    for i, (ref, far, near) in enumerate(zip([35, 36, 37], [40, 41, 42], [35.5, 36.5, 37.5])):
        results(f"r{i}", ref, ref)
        results(f"f{i}", far, far)
        results(f"n{i}", near, near)
    summarize.rows_table()
    lines = {
        line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()
    }
    # Every row has sd 1, so the threshold is 2 * sqrt(2/3) = 1.63: +5 is beyond it, +0.5 not.
    assert "**+5.00**" in lines["far"] and "+0.50" in lines["near"] and "**" not in lines["near"]
    assert f"36.00 ± {statistics.stdev([35, 36, 37]):.2f}" in lines["ref"]
    assert "| 3 |" in lines["far"]


def test_rows_table_names_the_runs_without_a_probe(results, monkeypatch, capsys):
    monkeypatch.setattr(seeded_rows, "ROWS", {"ref": ["r0", "r1", "r2"]})
    results("r0", 35.0, 38.0)
    results("r1", 36.0, 39.0)
    summarize.rows_table()
    out = capsys.readouterr()
    assert "| ref | 2 |" in out.out
    assert "ref: no probe for r2" in out.err


def test_spread_of_a_run_without_a_probe_exits_with_one_line(results, capsys):
    results("r0", 35.0, 38.0)
    with pytest.raises(SystemExit) as exit_:
        summarize.main(["--spread", "r0", "gone"])
    message = str(exit_.value.code)
    assert "gone.probe.json" in message and "\n" not in message and "r0.probe" not in message


def test_copies_go_to_the_results_folder_the_readers_read(results, tmp_path, capsys):
    """The copier and seeded_rows share one RESULTS: a run copied from RUNS reads back."""
    run = tmp_path / "runs" / "r0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,loss,prototypes_in_use,knn_top1,seconds\n0,,,29.0,\n1,4.3,50.0,31.5,20.0\n"
    )
    (run / "probe.json").write_text(
        json.dumps({"knn_top1": 31.5, "linear_top1": 36.0, "model": f"{run}/export"})
    )
    summarize.main([f"--runs={tmp_path / 'runs'}", "r0"])
    assert seeded_rows.probe("r0")["linear_top1"] == 36.0
    assert seeded_rows.probe("r0")["model"] == "runs/r0/export"
    assert "| r0 | 1 |" in capsys.readouterr().out


def test_wall_time_is_the_newest_successful_run_of_the_name(results, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "r0").mkdir(parents=True)
    (runs / "r0" / "metrics.csv").write_text("epoch,loss,knn_top1\n0,,29.0\n1,4.3,31.5\n")
    logs = {
        "queue.log": "trained r0 rc=0 in 7 s\ntrained r0 rc=2 in 9 s\n",  # an earlier attempt
        "queue2.log": "trained r0 rc=0 in 2880 s\ntrained r0 rc=1 in 5 s\n",
    }
    for age, (name, text) in enumerate(logs.items()):
        (runs / name).write_text(text)
        os.utime(runs / name, (1000 + age, 1000 + age))
    summarize.main([f"--runs={runs}", "r0"])
    assert "| r0 | 1 | 48.0 min |" in capsys.readouterr().out
