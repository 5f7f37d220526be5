"""CARL under Keras's JAX backend: the same step as TensorFlow's, and global under DataParallel.

The JAX side runs in subprocesses (tests/jax_backend_job.py); this process runs TensorFlow.
"""

import jax_backend_job as job
import keras
import numpy as np
import pytest
from jax_support import requires_jax, run_under_jax

pytestmark = [requires_jax, pytest.mark.slow]  # JAX processes: the slow tier


IMAGES = np.random.default_rng(1).integers(0, 256, (16, 24, 24, 3), dtype=np.uint8)
_VIEWS_SHAPE = (16, job.IMAGE_SIZE, job.IMAGE_SIZE, 3)
VIEWS = {
    name: np.random.default_rng(seed).uniform(0, 255, _VIEWS_SHAPE).astype("float32")
    for seed, name in enumerate(("view_a", "view_b"))
}


@pytest.fixture(scope="module")
def tensorflow_model(tmp_path_factory) -> tuple[str, str, np.ndarray]:
    """The initial model saved under TensorFlow: its weights file, its `.keras` file, and its
    assignments of the first views."""
    folder = tmp_path_factory.mktemp("jax_backend")
    keras.utils.set_random_seed(0)
    model = job.build_model()
    model.save_weights(folder / "initial.weights.h5")
    model.save(folder / "initial.keras")
    probabilities = model.predict(VIEWS["view_a"], verbose=0)
    return str(folder / "initial.weights.h5"), str(folder / "initial.keras"), probabilities


@pytest.fixture(scope="module")
def initial_weights(tensorflow_model) -> str:
    return tensorflow_model[0]


@pytest.fixture(scope="module")
def jax_steps(tensorflow_model, tmp_path_factory) -> dict:
    """Every step of tests/jax_backend_job.py, run in one JAX process on two host devices:
    name -> (figures, variables after the step); `loaded` -> the loaded model's assignments."""
    out = tmp_path_factory.mktemp("jax_steps")
    np.savez(out / "views.npz", **VIEWS)
    np.savez(out / "images.npz", images=IMAGES)
    weights, saved_model, _ = tensorflow_model
    args = [weights, saved_model, str(out / "views.npz"), str(out / "images.npz"), str(out)]
    run_under_jax(["tests/jax_backend_job.py", *args], devices=2)
    steps = {}
    for path in out.glob("*.npz"):
        if path.stem in ("views", "images", "loaded"):
            continue
        saved = np.load(path)
        parts = {"figure": {}, "variable": {}}
        for key in saved.files:
            kind, name = key.split("/", 1)
            parts[kind][name] = saved[key]
        steps[path.stem] = (parts["figure"], parts["variable"])
    steps["loaded"] = np.load(out / "loaded.npz")["probabilities"]
    return steps


@pytest.mark.parametrize("symmetric", [False, True], ids=["one_sided", "symmetric"])
def test_loss_terms_and_gradients_agree_with_tensorflow(initial_weights, jax_steps, symmetric):
    """Same weights, same two views: eq. 7's terms and every gradient (SGD at rate 1 moves each
    weight by its gradient) agree between the backends to float32 tolerance, and so do the
    BatchNorm moving statistics the step updates."""
    model = job.build_model(symmetric=symmetric)
    model.load_weights(initial_weights)
    before = job.variables_of(model)
    tf_figures = model.train_on_batch((VIEWS["view_a"], VIEWS["view_b"]), return_dict=True)
    tf_after = job.variables_of(model)
    jax_figures, jax_after = jax_steps["symmetric" if symmetric else "one_sided"]

    for name in ("loss", "consistency", "kl", "prototypes_in_use"):
        np.testing.assert_allclose(jax_figures[name], tf_figures[name], rtol=1e-5, err_msg=name)
    assert set(jax_after) == set(tf_after)
    moved = 0
    for path, start in before.items():
        tf_change, jax_change = start - tf_after[path], start - jax_after[path]
        scale = max(np.abs(tf_change).max(), 1e-6)
        np.testing.assert_allclose(jax_change, tf_change, atol=1e-4 * scale, err_msg=path)
        moved += bool(np.abs(tf_change).max() > 0)
    assert moved > len(before) // 2  # the comparison is about gradients that exist


def test_data_parallel_step_equals_one_device(jax_steps):
    """Two host devices under DataParallel take the single-device step on raw images: the batch
    mean of eq. 6, the BatchNorm statistics and the views' random draws (one per image of the
    global batch) are all the global batch's."""
    one_figures, one = jax_steps["one_device"]
    two_figures, two = jax_steps["data_parallel"]
    for name, value in one_figures.items():
        np.testing.assert_allclose(two_figures[name], value, rtol=1e-5, err_msg=name)
    for path, value in one.items():
        np.testing.assert_allclose(two[path], value, rtol=1e-5, atol=1e-6, err_msg=path)
    # A device that saw only its half of the batch would take another step.
    half_figures, _ = jax_steps["half_batch"]
    assert not np.isclose(half_figures["consistency"], one_figures["consistency"], rtol=1e-4)


def test_a_model_saved_under_tensorflow_loads_under_jax(tensorflow_model, jax_steps):
    """The `.keras` file of a TensorFlow run (fused, synchronized BatchNorm in its config) loads
    under JAX and assigns the same images to the same prototypes."""
    np.testing.assert_allclose(jax_steps["loaded"], tensorflow_model[2], rtol=1e-4, atol=1e-6)
