"""The JAX side of tests/test_jax_train.py: train.py's program, then what its export computes.

    python tests/jax_train_job.py OUT.npz TRAIN_FLAGS...

Runs `carl-train` (the program of `python train.py`) with TRAIN_FLAGS in this process, and when
it exits 0 loads the run's `export/carl.keras` and saves to OUT.npz, for the fixed `images()`,
the model's assignments (`probabilities`, `(N, K)`) and the backbone's features (`features`,
`(N, D)`), so the test process can compare them with the same file loaded under TensorFlow, and
whether XLA compiles the step of the model built from the digits smoke preset in this backend
(`model_jit_compile`) although the preset's `jit_compile` (`preset_jit_compile`) is off. The
exit code is train.py's. One process pays JAX's start-up and compilation once for all of it.
"""

import sys

import numpy as np

IMAGE_SIZE = 32


def images() -> np.ndarray:
    """Eight fixed raw-pixel images, float32 `(8, 32, 32, 3)` in [0, 255]."""
    return (
        np.random.default_rng(0).uniform(0, 255, (8, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    )


def main(out: str, flags: list[str]) -> int:
    import keras

    import carl_tf  # noqa: F401  (registers carl_tf's classes for load_model)
    from carl_tf.cli.train import run
    from carl_tf.configs.digits import get_config
    from carl_tf.run.rundir import RunDirectory
    from carl_tf.training.pretrain import build_model

    sys.argv = ["train.py", *flags]
    try:
        run()
    except SystemExit as done:
        if done.code:
            return done.code
    workdir = next(flag.split("=", 1)[1] for flag in flags if flag.startswith("--workdir="))
    model = keras.saving.load_model(RunDirectory(workdir).model_export)
    smoke = get_config("smoke")
    np.savez(
        out,
        probabilities=model.predict(images(), verbose=0),
        features=model.backbone.predict(images(), verbose=0),
        preset_jit_compile=smoke.jit_compile,
        model_jit_compile=build_model(smoke, steps_per_epoch=2).jit_compile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
