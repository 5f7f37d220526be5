"""experiments/run_queue.sh: how it reads queue lines and what it reports, with a stand-in Python.

The stand-in records each command line it is given and fails for a job marked `--fail`, so the
test sees which script each line runs, with which arguments, and what the log says, in a
fraction of a second.
"""

import os
import subprocess

import pytest

QUEUE_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "run_queue.sh"
)

STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$RUNS/calls.txt"
case "$*" in *--fail*) echo "error: bad flag"; exit 3;; esac
echo "figures and settings in probe.json"
"""


@pytest.fixture
def run_queue(tmp_path):
    """Runs the queue on the given lines and returns (commands run, queue log)."""

    def run(lines):
        python = tmp_path / "python"
        python.write_text(STAND_IN)
        python.chmod(0o755)
        (tmp_path / "queue.txt").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "RUNS": str(tmp_path), "PY": str(python)}
        log = subprocess.run(
            ["bash", QUEUE_SCRIPT], env=env, capture_output=True, text=True, check=True
        ).stdout
        return (tmp_path / "calls.txt").read_text().splitlines(), log

    return run


def test_aligned_columns_name_the_script_and_pass_the_arguments(run_queue, tmp_path):
    calls, _ = run_queue(
        [
            "simclr_a               experiments/my_method.py --config=cifar10_cpu --seed=1",
            "carl_b    --config=cifar10_cpu:ablation   --seed=2",
            "# a comment",
        ]
    )
    runs = str(tmp_path)
    assert calls == [
        f"experiments/my_method.py --config=cifar10_cpu --seed=1 --workdir={runs}/simclr_a",
        f"evaluate.py --model={runs}/simclr_a --protocol=knn,linear --linear=features "
        f"--plots=false --output={runs}/simclr_a/probe.json",
        f"train.py --config=cifar10_cpu:ablation --seed=2 --workdir={runs}/carl_b",
        f"evaluate.py --model={runs}/carl_b --protocol=knn,linear --linear=features "
        f"--plots=false --output={runs}/carl_b/probe.json",
    ]


def test_a_failed_training_is_logged_with_its_exit_code_and_not_probed(run_queue):
    calls, log = run_queue(["bad --config=x --fail", "good --config=x"])
    assert "trained bad rc=3" in log and "not probed bad: error: bad flag" in log
    assert "trained good rc=0" in log and "probed good rc=0" in log
    assert [c.split()[0] for c in calls] == ["train.py", "train.py", "evaluate.py"]
