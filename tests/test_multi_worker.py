"""Multi-worker `fit`: two loopback workers, one of which crashes and is restarted, train exactly
like one process on the same batches; only the chief writes to the workdir."""

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
# Wall-clock limit per launch; a worker whose peer hangs would otherwise wait forever.
TIMEOUT_SECONDS = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(args: list[str], log_path, tf_config: dict | None, **env) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, JOB, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def _wait(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
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


def _check_exit_codes(codes: dict[str, int], expected: dict[str, int], logs: dict) -> None:
    wrong = {name: code for name, code in codes.items() if code != expected[name]}
    if wrong:
        tails = "\n".join(f"--- {n}:\n{logs[n].read_text()[-3000:]}" for n in wrong)
        pytest.fail(f"exit codes {codes}, expected {expected}\n{tails}")


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def test_two_workers_recover_from_a_crash_and_match_one_process(tmp_path):
    initial = tmp_path / "initial.weights.h5"
    keras.utils.set_random_seed(0)
    model = job.build_model()
    model.save_weights(initial)
    cluster_dir, single_dir = tmp_path / "cluster_run", tmp_path / "single_run"
    logs = {"single": tmp_path / "single.log"}

    def launch_cluster(attempt: str, **env) -> dict[str, subprocess.Popen]:
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        processes = {}
        for index in range(2):
            name = f"worker{index}_{attempt}"
            logs[name] = tmp_path / f"{name}.log"
            task = {"type": "worker", "index": index}
            args = [str(cluster_dir), str(initial), str(tmp_path / f"worker{index}.npz")]
            tf_config = {"cluster": {"worker": workers}, "task": task}
            processes[name] = _launch(args, logs[name], tf_config, **env)
        return processes

    # First attempt: worker 1 dies after epoch 0; worker 0 then fails in its next collective.
    processes = launch_cluster("crashed", CRASH_AFTER_EPOCH="0")
    single_args = [str(single_dir), str(initial), str(tmp_path / "single.npz")]
    processes["single"] = _launch(single_args, logs["single"], None)
    expected = {"worker0_crashed": 1, "worker1_crashed": job.CRASH_EXIT_CODE, "single": 0}
    _check_exit_codes(_wait(processes), expected, logs)

    # Restarted with the same command, both resume after the backed-up epoch 0.
    processes = launch_cluster("restarted")
    _check_exit_codes(_wait(processes), dict.fromkeys(processes, 0), logs)
    for name in processes:
        assert logs[name].read_text().count("begins") == 1
        assert "epoch 1 begins" in logs[name].read_text()

    # Only the chief (worker 0) wrote to the cluster's workdir; worker 1 removed its own dir.
    assert sorted(os.listdir(cluster_dir)) == ["carl.keras"]
    assert f"writing to {cluster_dir}.workertemp_worker_1" in logs["worker1_restarted"].read_text()
    assert not any(p.name.startswith("cluster_run.") for p in tmp_path.iterdir())
    assert sorted(os.listdir(single_dir)) == ["carl.keras"]

    worker0, worker1, single = (
        _weights(tmp_path / f"{n}.npz") for n in ("worker0", "worker1", "single")
    )
    moved = [not np.allclose(w, w0) for w, w0 in zip(worker0, model.get_weights())]
    assert sum(moved) > len(moved) // 2, "training must actually move the weights"
    for got, want in zip(worker1, worker0):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(worker0, single):
        # Updates are about 1e-2: a wrong batch or loss scale would differ by as much.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_keras_hooks_the_fix_overrides_are_checked_at_import(monkeypatch):
    """A Keras without the private hooks fails with one clear error, not a silent no-fix."""
    from keras.src.backend.tensorflow import trainer

    from carl_tf.errors import CarlError
    from carl_tf.method import multi_worker_fit

    multi_worker_fit._check_hooks()  # the installed Keras has them
    monkeypatch.delattr(trainer.TensorFlowTrainer, "_make_function")
    with pytest.raises(CarlError, match=r"_make_function.*keras-team/keras#20585"):
        multi_worker_fit._check_hooks()
