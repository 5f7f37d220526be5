"""README.md's promises: the library example runs as written and CI runs its test command."""

import os
import re

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_library_example_runs_as_written():
    section = _readme().split("## Using the library from your own script", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["assignments"].shape == (10, 100)
    assert namespace["features"].shape == (10, 64)
    assert np.all(np.isfinite(namespace["history"].history["loss"]))


def test_ci_runs_the_readme_test_commands():
    """Both tiers' commands, each in `.ci/run` as the README gives it (CI adds --durations)."""
    blocks = re.findall(r"```bash\n(.*?)```", _readme(), re.S)
    test_block = next(b.strip() for b in blocks if "pytest" in b)
    commands = [line.strip() for line in test_block.splitlines() if line.strip()]
    assert any("--run-slow" in c for c in commands) and any("-m slow" in c for c in commands)
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = f.read()
    for command in commands:
        assert command in ci, command


def test_python_api_example_runs_as_written(tmp_path, monkeypatch):
    section = _readme().split("## Both jobs from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        import keras

        keras.mixed_precision.set_dtype_policy("float32")
    run, result = namespace["run"], namespace["result"]
    assert run.trained and run.epochs == 2 and run.knn_untrained is not None
    assert os.path.isfile(run.model_export)
    assert 0 <= result.figures["knn_top1"] <= 100
    assert result.output == str(tmp_path / "runs" / "digits-smoke" / "evaluation.json")
    assert namespace["model"].assigner is not None
    again = namespace["carl_tf"].pretrain(namespace["config"], "runs/digits-smoke")
    assert not again.trained and again.knn_final == run.knn_final


def test_keras_applications_example_runs_as_written():
    section = _readme().split("### Inputs, other backbones and monitoring", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    (knn,) = namespace["history"].history["knn_top1"]
    assert 0.0 <= knn <= 100.0
    assert namespace["backbone"].output_shape == (None, 1280)


def test_exported_backbone_example_runs_as_written(tmp_path, monkeypatch, finished_run_copy):
    """The SavedModel block, on the run `python train.py` writes (here the shared smoke run)."""
    monkeypatch.chdir(tmp_path)
    finished_run_copy(tmp_path / "runs" / "digits")
    section = _readme().split("## Exported backbone", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["features"].shape) == (4, 32)  # 8 x width 4
    assert tuple(namespace["probabilities"].shape) == (4, 100)
    np.testing.assert_allclose(np.sum(namespace["probabilities"], axis=1), 1.0, rtol=1e-5)
