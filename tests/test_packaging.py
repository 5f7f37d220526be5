"""carl_tf as an installed package: the wheel's contents, what `import carl_tf` registers and
leaves alone, and the public names. The fresh-virtualenv smoke test of the built wheel is
`.ci/wheel_smoke.sh`, which `.ci/run` runs before the suite. The tests that build the wheel or
start interpreters are in the slow tier.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import carl_tf
from carl_tf.method.backbones import build_backbone
from carl_tf.method.heads import ProjectionHead
from carl_tf.method.normalization import batch_norm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPACKAGES = ("cli", "configs", "data", "evaluation", "method", "run", "training")
PRESETS = ("common", "cifar10", "cifar100", "cifar10_cpu", "digits", "stl10")


def python(code: str, env_extra: dict | None = None, cwd: str | None = None):
    """Runs `code` in a fresh interpreter (outside the checkout unless `cwd` says)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd or "/"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this checkout: the one `.ci/wheel_smoke.sh` built (CARL_TF_WHEEL, as `.ci/run`
    sets it, so CI builds it once), or else built here."""
    if os.environ.get("CARL_TF_WHEEL"):
        return zipfile.ZipFile(os.environ["CARL_TF_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    # setuptools stages into build/ and does not clear it: a stale module would ship.
    shutil.rmtree(os.path.join(REPO, "build"), ignore_errors=True)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), REPO],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = out.glob("carl_tf-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_the_presets_and_both_commands(wheel):
    names = set(wheel.namelist())
    for package in SUBPACKAGES:
        assert f"carl_tf/{package}/__init__.py" in names, package
    for preset in PRESETS:
        assert f"carl_tf/configs/{preset}.py" in names, preset
    checkout_modules = {
        os.path.relpath(os.path.join(d, f), REPO)
        for d, _, files in os.walk(os.path.join(REPO, "carl_tf"))
        for f in files
        if f.endswith(".py")
    }
    assert checkout_modules <= names, checkout_modules - names
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "carl-train = carl_tf.cli.train:run" in text
    assert "carl-evaluate = carl_tf.cli.evaluate:run" in text


def test_version_is_the_installed_distributions():
    from importlib import metadata

    assert carl_tf.__version__ == metadata.version("carl_tf") != "0+unknown"


def test_public_names_stay():
    assert carl_tf.backbones.build_backbone is build_backbone
    for name in ("CARL", "KLWeightSchedule", "SimCLRAugment", "KNNMonitor", "pretrain", "evaluate"):
        assert getattr(carl_tf, name) is not None
    assert callable(carl_tf.load_model)


@pytest.mark.slow
def test_a_saved_model_loads_in_a_fresh_process_after_import_carl_tf_alone(tmp_path):
    """Every carl_tf class a .keras file can hold (CARL, its head with a norm factory, the
    fused BatchNorm, the views) is registered by `import carl_tf` and nothing else."""
    head = ProjectionHead((32,), 16, norm_layer=batch_norm(momentum=0.8, epsilon=1e-4))
    model = carl_tf.CARL(
        build_backbone("resnet18", width=4, image_size=32),
        num_prototypes=10,
        projection_head=head,
        augmenter=carl_tf.SimCLRAugment(image_size=32, crop_scale=(0.3, 1.0)),
    )
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "carl.keras")
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", model.predict(images, verbose=0))
    code = (
        "import numpy as np, keras, carl_tf\n"
        f"m = keras.saving.load_model({path!r})\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        f"np.testing.assert_allclose(m.predict(x, verbose=0), np.load("
        f"{str(tmp_path / 'expected.npy')!r}), atol=1e-5)\n"
        "bn = m.projection_head.hidden_layers[1]\n"
        "print(type(bn).__name__, bn.momentum, bn.epsilon)\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["FusedBatchNormalization", "0.8", "0.0001"]
    without = python(code.replace(", carl_tf\n", "\n"))
    assert without.returncode != 0, "the check needs `import carl_tf` to register the classes"


@pytest.mark.slow
def test_import_carl_tf_leaves_stderr_and_the_heavy_modules_alone():
    """TensorFlow's own start-up notices reach a library user's stderr (they are TensorFlow's
    to print), and `import carl_tf` loads no TFDS, data, evaluation or command-line module."""
    code = (
        "import sys, carl_tf\n"
        "heavy = [m for m in sys.modules if m.startswith(('tensorflow_datasets', 'keras_cv',"
        " 'carl_tf.data', 'carl_tf.evaluation', 'carl_tf.cli', 'carl_tf.training'))]\n"
        "print(heavy)\n"
    )
    plain = python("import tensorflow", {"TF_CPP_MIN_LOG_LEVEL": "3"})
    result = python(code, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    notices = [line for line in plain.stderr.splitlines() if "oneDNN" in line]
    if not notices:
        pytest.skip("this TensorFlow prints no start-up notice to compare with")
    assert any("oneDNN" in line for line in result.stderr.splitlines())


@pytest.mark.slow
def test_a_user_script_gets_each_tensorflow_notice_once_after_import_carl_tf():
    """TensorFlow 2.21 prints its oneDNN and CUDA notices twice when imported alone; a script
    that imports carl_tf and then TensorFlow, or loads Keras as the programs do, gets each once."""

    def repeated(stderr: str) -> list[str]:
        messages = [line.split("] ", 1)[1] for line in stderr.splitlines() if "] " in line[:80]]
        return [m for m in set(messages) if messages.count(m) > 1]

    plain = python("import tensorflow")
    if not repeated(plain.stderr):
        pytest.skip("this TensorFlow prints no notice twice")
    for code in (
        "import carl_tf, tensorflow, keras",
        "from carl_tf.cli import common; common.load_keras(); import tensorflow",
    ):
        result = python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert repeated(result.stderr) == [], (code, result.stderr)


@pytest.mark.slow
def test_the_entry_points_quiet_tensorflows_start_up():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--help"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0
    assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower()
    assert "--config" in result.stdout + result.stderr


@pytest.mark.slow
def test_presets_are_found_by_name_from_anywhere():
    code = (
        "from carl_tf.cli.train import preset_path, shipped_presets\n"
        "print(sorted(shipped_presets()))\n"
        "print(preset_path('cifar10_cpu').endswith('cifar10_cpu.py'), preset_path('nope'))\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    names, found = result.stdout.strip().splitlines()
    assert set(PRESETS) - {"common"} <= set(eval(names))
    assert found == "True None"


def test_keras_round_trips_the_head_config():
    head = ProjectionHead((8, 8), 4, norm_layer=batch_norm(synchronized=False, fused=False))
    clone = ProjectionHead.from_config(head.get_config())
    bn = clone.hidden_layers[1]
    assert type(bn) is keras.layers.BatchNormalization and not bn.synchronized
    assert clone.get_config() == head.get_config()
