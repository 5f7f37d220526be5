"""Runs Python under Keras's JAX backend in a subprocess, for the tests of the JAX path.

A process picks its Keras backend once, at the first `import keras`, and the test process runs
TensorFlow; so every JAX test starts its own interpreter. `without_tensorflow` also makes
TensorFlow unimportable there (`tests/no_tensorflow/sitecustomize.py`), as on a machine that has
only JAX and Keras.

Every JAX process of one test session shares one persistent compilation cache (a temporary
folder, removed when the session ends): a process that compiles what an earlier one compiled
(the resumed run the killed run's step, the kNN embedding, the export) reads the executable
instead of compiling it again, which halves a digits run's time on 2 cores.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_NO_TENSORFLOW = Path(__file__).resolve().parent / "no_tensorflow"
_COMPILATION_CACHE = tempfile.TemporaryDirectory(prefix="carl_tf_jax_cache_")

requires_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed"
)


def jax_environment(devices: int = 1, without_tensorflow: bool = False, **extra) -> dict:
    """The environment of a JAX subprocess: `devices` host CPUs, optionally no TensorFlow."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE.name
    # Every executable, however quick to compile: a digits run compiles hundreds of small ones.
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    paths = [str(REPO)] + ([str(_NO_TENSORFLOW)] if without_tensorflow else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_under_jax(
    args: list[str],
    *,
    devices: int = 1,
    without_tensorflow: bool = False,
    output=subprocess.PIPE,
    cwd: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Starts `python ARGS...` under the JAX backend; stdout and stderr go to `output` (text)."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=jax_environment(devices, without_tensorflow),
        cwd=cwd or REPO,
        stdout=output,
        stderr=output,
        text=True,
    )


def run_under_jax(
    args: list[str],
    *,
    devices: int = 1,
    without_tensorflow: bool = False,
    timeout: float = 900,
    cwd: str | os.PathLike | None = None,
    check: bool = True,
    **extra_env,
) -> subprocess.CompletedProcess:
    """Runs `python ARGS...` under the JAX backend; fails the test with its output on error."""
    result = subprocess.run(
        [sys.executable, *args],
        env=jax_environment(devices, without_tensorflow, **extra_env),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"python {' '.join(args)} exited {result.returncode} under JAX:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result
