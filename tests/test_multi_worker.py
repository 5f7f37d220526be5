"""Multi-worker `fit`: two loopback workers, one of which crashes and is restarted, train exactly
like one process on the same batches; only the chief writes to the workdir."""

import os
import subprocess

import keras
import loopback_cluster as cluster
import multi_worker_job as job
import numpy as np
import pytest

JOB = os.path.join(cluster.REPO, "tests", "multi_worker_job.py")


@pytest.mark.slow
def test_two_workers_recover_from_a_crash_and_match_one_process(tmp_path):
    initial = tmp_path / "initial.weights.h5"
    keras.utils.set_random_seed(0)
    model = job.build_model()
    model.save_weights(initial)
    cluster_dir, single_dir = tmp_path / "cluster_run", tmp_path / "single_run"
    logs = {"single": tmp_path / "single.log"}

    def launch_cluster(attempt: str, **env) -> dict[str, subprocess.Popen]:
        processes = {}
        for index, tf_config in enumerate(cluster.cluster_configs(2)):
            name = f"worker{index}_{attempt}"
            logs[name] = tmp_path / f"{name}.log"
            args = [str(cluster_dir), str(initial), str(tmp_path / f"worker{index}.npz")]
            processes[name] = cluster.launch(JOB, args, logs[name], tf_config, **env)
        return processes

    # First attempt: worker 1 dies after epoch 0; worker 0 then fails in its next collective.
    processes = launch_cluster("crashed", CRASH_AFTER_EPOCH="0")
    single_args = [str(single_dir), str(initial), str(tmp_path / "single.npz")]
    processes["single"] = cluster.launch(JOB, single_args, logs["single"], None)
    expected = {"worker0_crashed": 1, "worker1_crashed": job.CRASH_EXIT_CODE, "single": 0}
    cluster.check_exit_codes(cluster.wait(processes), expected, logs)

    # Restarted with the same command, both resume after the backed-up epoch 0.
    processes = launch_cluster("restarted")
    cluster.check_exit_codes(cluster.wait(processes), dict.fromkeys(processes, 0), logs)
    for name in processes:
        assert logs[name].read_text().count("begins") == 1
        assert "epoch 1 begins" in logs[name].read_text()

    # Only the chief (worker 0) wrote to the cluster's workdir; worker 1 removed its own dir.
    assert sorted(os.listdir(cluster_dir)) == ["carl.keras"]
    assert f"writing to {cluster_dir}.workertemp_worker_1" in logs["worker1_restarted"].read_text()
    assert not any(p.name.startswith("cluster_run.") for p in tmp_path.iterdir())
    assert sorted(os.listdir(single_dir)) == ["carl.keras"]

    worker0, worker1, single = (
        cluster.saved_weights(tmp_path / f"{n}.npz") for n in ("worker0", "worker1", "single")
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
