"""The JAX side of tests/test_jax_train.py: train.py's program, then what its export computes.

    python tests/jax_train_job.py OUT.npz TRAIN_FLAGS...

Runs `carl-train` (the program of `python train.py`) with TRAIN_FLAGS in this process, and when
it exits 0 loads the run's `export/carl.keras` and saves to OUT.npz, for the fixed `images()`,
the model's assignments (`probabilities`, `(N, K)`) and the backbone's features (`features`,
`(N, D)`), so the test process can compare them with the same file loaded under TensorFlow. The
exit code is train.py's. One process pays JAX's start-up and compilation once for both.
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
    from carl_tf.run.rundir import RunDirectory

    sys.argv = ["train.py", *flags]
    try:
        run()
    except SystemExit as done:
        if done.code:
            return done.code
    workdir = next(flag.split("=", 1)[1] for flag in flags if flag.startswith("--workdir="))
    model = keras.saving.load_model(RunDirectory(workdir).model_export)
    np.savez(
        out,
        probabilities=model.predict(images(), verbose=0),
        features=model.backbone.predict(images(), verbose=0),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
