"""What the tests that start the programs share: the checkout, the environment, train.py and
evaluate.py as processes, and the arguments of the shared finished run (tests/conftest.py).

The JAX subprocesses have their own helper, tests/jax_support.py.
"""

import csv
import os
import subprocess
import sys
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config=configs/digits.py:smoke"]
# The programs set their own TensorFlow log level, as a user's shell would leave it to.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

# The shared finished run (`finished_digits` in tests/conftest.py): the smoke config's two
# epochs (kNN every epoch) at a learning rate raised so that they lift kNN top-1 well above the
# untrained network's (tests/test_evaluate.py checks by how much).
FINISHED_EPOCHS = 2
FINISHED_LEARNING_RATE = 0.4
FINISHED_ARGS = [*SMOKE, f"--epochs={FINISHED_EPOCHS}", f"--learning_rate={FINISHED_LEARNING_RATE}"]


class FinishedRun(NamedTuple):
    """The shared run's workdir and its train.py process (stdout and stderr captured)."""

    workdir: str
    result: subprocess.CompletedProcess


def train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs train.py in the checkout; returns the finished process (output captured as text)."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(script: str, *args: str) -> subprocess.Popen:
    """Starts `python SCRIPT ARGS...` in the checkout, its stdout and stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """Waits for a `start`ed process; returns (returncode, stdout, stderr)."""
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def metrics(workdir) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def error_lines(output: str) -> list[str]:
    """The lines of a program's output that mention an error."""
    return [line for line in output.splitlines() if "error" in line.lower()]
