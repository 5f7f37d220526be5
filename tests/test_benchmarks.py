"""The benchmark scripts run and report consistent figures (their speed is never asserted)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # benchmark processes: the slow tier
TINY = ["--backbone_width=4", "--batch_size=16", "--image_size=16"]


def run_benchmark(script: str, *args: str) -> dict:
    """Runs benchmarks/SCRIPT from the repository root; returns its last line, a JSON object."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, os.path.join("benchmarks", script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_profile_splits_the_step_into_parts_and_kinds_of_op(tmp_path):
    figures = run_benchmark(
        "profile_step.py", *TINY, "--steps=2", "--warmup=1", f"--logdir={tmp_path}"
    )
    by_part, by_kind = figures["share_by_part"], figures["share_by_kind"]
    assert {"forward and loss", "backward", "view making", "optimizer update"} <= set(by_part)
    assert {"convolution", "convolution gradients", "batch norm"} <= set(by_kind)
    assert figures["op_seconds"] > 0
    assert list(tmp_path.glob("**/*.xplane.pb")), "the trace stays for TensorBoard"


def test_batchnorm_ab_times_both_models():
    figures = run_benchmark("batchnorm_ab.py", *TINY, "--steps=1", "--repeats=1", "--warmup=1")
    assert figures["fused_pairs_per_s"] > 0 and figures["keras_pairs_per_s"] > 0
    # Stem, 16 in the blocks, 3 shortcuts: all fused in one model, none in its Keras twin.
    assert figures["fused_layers"] == {"fused": 20, "keras": 0}


def test_input_pipeline_streams_a_generated_folder_of_photos(tmp_path):
    figures = run_benchmark(
        "input_pipeline.py",
        f"--folder={tmp_path / 'photos'}",
        "--files=48",
        "--width=120",
        "--height=100",
        "--image_size=64",
        "--batch_size=16",
        "--input_batches=2",
        "--repeats=1",
    )
    assert figures["files"] == 48 and figures["streamed"]
    assert figures["images_per_s"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["full_resolution_images_per_s"] > 0
    assert len(list((tmp_path / "photos").glob("class_*/*.jpg"))) == 48
