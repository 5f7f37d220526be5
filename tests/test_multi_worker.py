"""Multi-worker `fit`: two loopback workers train exactly like one process on the same batches."""

import json
import os
import socket
import subprocess
import sys

import keras
import multi_worker_job as job
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = os.path.join(REPO, "tests", "multi_worker_job.py")
# Wall-clock limit for the three processes together; a worker whose peer died would wait forever.
TIMEOUT_SECONDS = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(args: list[str], log_path, tf_config: dict | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, JOB, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_all(processes: dict[str, subprocess.Popen], logs: dict) -> None:
    """Waits for every process; on a timeout kills them all (SIGKILL: a worker blocked in a
    collective ignores SIGTERM). Fails with the log tail of any process that did not exit 0."""
    try:
        for process in processes.values():
            process.wait(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        for process in processes.values():
            process.kill()
            process.wait()
    failed = {name: p.returncode for name, p in processes.items() if p.returncode != 0}
    if failed:
        tails = "\n".join(f"--- {n}:\n{logs[n].read_text()[-3000:]}" for n in failed)
        pytest.fail(f"exit codes {failed} (-9: killed after {TIMEOUT_SECONDS} s)\n{tails}")


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def test_two_workers_match_one_process_and_only_the_chief_writes(tmp_path):
    initial = tmp_path / "initial.weights.h5"
    keras.utils.set_random_seed(0)
    model = job.build_model()
    model.save_weights(initial)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    cluster_dir, single_dir = tmp_path / "cluster_run", tmp_path / "single_run"
    runs = {
        "worker0": (cluster_dir, 0),
        "worker1": (cluster_dir, 1),
        "single": (single_dir, None),
    }
    processes, logs = {}, {}
    for name, (workdir, index) in runs.items():
        logs[name] = tmp_path / f"{name}.log"
        tf_config = None
        if index is not None:
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        args = [str(workdir), str(initial), str(tmp_path / f"{name}.npz")]
        processes[name] = _launch(args, logs[name], tf_config)
    _wait_all(processes, logs)

    # Only the chief (worker 0) wrote to the cluster's workdir; worker 1 removed its scratch dir.
    assert sorted(os.listdir(cluster_dir)) == ["carl.keras"]
    assert f"writing to {cluster_dir}.workertemp_worker_1" in logs["worker1"].read_text()
    assert not any(p.name.startswith("cluster_run.") for p in tmp_path.iterdir())
    assert sorted(os.listdir(single_dir)) == ["carl.keras"]

    worker0, worker1, single = (_weights(tmp_path / f"{n}.npz") for n in runs)
    moved = [not np.allclose(w, w0) for w, w0 in zip(worker0, model.get_weights())]
    assert sum(moved) > len(moved) // 2, "training must actually move the weights"
    for got, want in zip(worker1, worker0):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(worker0, single):
        # Updates are about 1e-2: a wrong batch or loss scale would differ by as much.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
