"""The JAX side of tests/test_data_without_tensorflow.py: data and kNN with no TensorFlow at all.

    python tests/data_jax_job.py WORK_DIR

Run under Keras's JAX backend with TensorFlow unimportable (`jax_support.run_under_jax(...,
without_tensorflow=True)`). WORK_DIR holds what the test process made: `images.npz` (an npz
source), `folder/` (an image folder with one undecodable file) and `backbone.weights.h5` (the
weights of `tiny_backbone`). The job loads and batches digits, the npz and the folder, provokes
the errors of the paths that need TensorFlow, measures KNNMonitor on the digits, and writes what
it found to WORK_DIR/jax.npz and WORK_DIR/jax.json for the test to compare with TensorFlow's.
One process runs every check: each pays JAX's start-up once.
"""

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np

# The source settings both processes load with.
DIGITS_SIZE = 24
NPZ_SIZE = 8
FOLDER_SIZE = 16
HOLDOUT = 0.2
BATCH_SIZE = 64
KNN_K = 20


def tiny_backbone():
    """A small CARL-free conv net `(batch, 24, 24, 3)` in [0, 255] -> `(batch, 16)` features."""
    import keras

    return keras.Sequential(
        [
            keras.Input((DIGITS_SIZE, DIGITS_SIZE, 3)),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16),
        ]
    )


def _import_the_lower_layers() -> None:
    """Makes `carl_tf` a bare package, so that its data and evaluation layers load on their own.

    `carl_tf/__init__.py` imports the method layer (the CARL model), which another change
    ports off TensorFlow; these checks are about the layers below it, which import nothing
    above them, so they must load without TensorFlow whatever the method layer does.
    """
    package = types.ModuleType("carl_tf")
    package.__path__ = [str(Path(__file__).resolve().parents[1] / "carl_tf")]
    sys.modules["carl_tf"] = package


def _error(call) -> dict:
    """The type, UsageError-ness and message of the exception `call()` raises."""
    from carl_tf.errors import UsageError

    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test checks what it is
        usage = isinstance(error, UsageError)
        return {"type": type(error).__name__, "usage_error": usage, "message": str(error)}
    return {"type": None, "usage_error": False, "message": ""}


class _Warnings(logging.Handler):
    """Collects the messages of the warnings logged while it is attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main(work_dir: str) -> None:
    work = Path(work_dir)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("TensorFlow is importable; run with without_tensorflow=True")
    _import_the_lower_layers()
    import keras

    from carl_tf import data
    from carl_tf.evaluation.monitor import KNNMonitor

    arrays, report = {}, {"backend": keras.backend.backend()}

    digits = data.load_source("digits", split="all", image_size=DIGITS_SIZE)
    arrays["digits"] = digits.arrays[0]
    batches = data.array_batches(digits.arrays[0], BATCH_SIZE, seed=0)
    arrays["digits_batch_3"] = batches[3]

    npz = data.load_source(f"npz:{work / 'images.npz'}", split="all", image_size=NPZ_SIZE)
    arrays["npz_images"], arrays["npz_labels"] = npz.arrays

    warnings = _Warnings()
    logging.getLogger("carl_tf.data").addHandler(warnings)
    folder = data.load_source(f"folder:{work / 'folder'}", split="all", image_size=FOLDER_SIZE)
    arrays["folder_images"], arrays["folder_labels"] = folder.arrays
    report["folder_warnings"] = warnings.messages
    report["folder_records"] = folder.records is not None
    arrays["folder_batch_0"] = data.array_batches(folder.arrays[0], 4, seed=0)[0]

    report["tfds_error"] = _error(lambda: data.load_source("cifar10"))
    report["over_budget_error"] = _error(
        lambda: data.load_source(f"folder:{work / 'folder'}", memory_budget_bytes=1)
    )
    report["make_dataset_error"] = _error(
        lambda: data.make_dataset(digits, batch_size=4, shuffle=False, drop_remainder=True)
    )

    backbone = tiny_backbone()
    backbone.load_weights(str(work / "backbone.weights.h5"))
    train = data.load_source("digits", split="train", holdout=HOLDOUT, image_size=DIGITS_SIZE)
    test = data.load_source("digits", split="test", holdout=HOLDOUT, image_size=DIGITS_SIZE)
    monitor = KNNMonitor(train.arrays, test.arrays, k=KNN_K)
    monitor.set_model(types.SimpleNamespace(backbone=backbone))
    report["knn_top1"] = monitor.measure()
    bank_batches = data.LabelledArrayBatches(*train.arrays, batch_size=100)
    batched = KNNMonitor(bank_batches, test.arrays, k=KNN_K)
    batched.set_model(types.SimpleNamespace(backbone=backbone))
    report["knn_top1_batched_bank"] = batched.measure()

    report["tensorflow_imported"] = sorted(
        name for name in sys.modules if name.split(".")[0] in ("tensorflow", "tensorflow_datasets")
    )
    np.savez(work / "jax.npz", **arrays)
    (work / "jax.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
