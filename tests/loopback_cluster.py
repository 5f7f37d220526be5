"""Helpers of the multi-worker tests: job processes on loopback ports, their exit codes and files.

Each test runs a job script once per worker, with a `TF_CONFIG` naming every worker on a free
127.0.0.1 port, and once without `TF_CONFIG` as the single-process reference.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wall-clock limit per launch; a worker whose peer hangs would otherwise wait forever.
TIMEOUT_SECONDS = 240


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_configs(count: int) -> list[dict]:
    """The `TF_CONFIG` of each of `count` workers of one loopback cluster."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    return [
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        for index in range(count)
    ]


def launch(job: str, args: list[str], log_path, tf_config: dict | None, **env) -> subprocess.Popen:
    """Starts `python job *args`, its output in `log_path`; `tf_config` None: no cluster."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, job, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
    """Exit codes; on a timeout every process is killed (SIGKILL: a worker blocked in a
    collective ignores SIGTERM) and reports -9."""
    try:
        for process in processes.values():
            process.wait(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        for process in processes.values():
            process.kill()
            process.wait()
    return {name: process.returncode for name, process in processes.items()}


def check_exit_codes(codes: dict[str, int], expected: dict[str, int], logs: dict) -> None:
    wrong = {name: code for name, code in codes.items() if code != expected[name]}
    if wrong:
        tails = "\n".join(f"--- {n}:\n{logs[n].read_text()[-3000:]}" for n in wrong)
        pytest.fail(f"exit codes {codes}, expected {expected}\n{tails}")


def saved_weights(path) -> list[np.ndarray]:
    """The arrays a job saved with `np.savez(path, *model.get_weights())`, in order."""
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
