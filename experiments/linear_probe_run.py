"""kNN and linear-probe top-1 of a finished run's backbone on the 45k/5k split of its config.

python experiments/linear_probe_run.py --workdir=/tmp/runs/main [--untrained]

Loads WORKDIR/export/carl.keras (or, with --untrained, the same architecture freshly initialised
with the run's seed), extracts backbone features of the run's train split (45,000 images: the full
labelled train split, also when the run pretrained on a 10k subset) and validation split (5,000),
and reports the weighted kNN (k=200, T=0.1) and the linear probe in features mode
(carl_tf.evaluation.linear_probe_on_features: no augmentation, standardised features, SGD 0.9,
100 epochs, lr 0.1 dropped x0.1 at 60% and 80%). Fast mode, not the full MoCo protocol (which
trains on augmented crops through the frozen backbone). Appends a JSON line to WORKDIR/probe.json.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from carl_tf import data  # noqa: E402
from carl_tf.evaluation import extract_features, knn_accuracy, linear_probe_on_features  # noqa: E402
from carl_tf.training import build_model  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of train.py.", required=True)
_UNTRAINED = flags.DEFINE_bool("untrained", False, "Probe the run's architecture untrained.")
_EPOCHS = flags.DEFINE_integer("epochs", 100, "Linear probe epochs.")


def main(argv):
    del argv
    with open(os.path.join(_WORKDIR.value, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    started = time.time()
    if _UNTRAINED.value:
        keras.utils.set_random_seed(config.seed)
        backbone = build_model(config, steps_per_epoch=1).backbone
    else:
        model = keras.saving.load_model(os.path.join(_WORKDIR.value, "export", "carl.keras"))
        backbone = model.backbone
    splits = {}
    for split in ("train", "test"):
        source = data.load_source(
            config.dataset,
            split=split,
            image_size=config.image_size,
            holdout=config.holdout,
            seed=config.split_seed,
        )
        images, labels = data.source_arrays(source)
        splits[split] = (extract_features(backbone, images), labels)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=200, temperature=0.1)
    probe = linear_probe_on_features(
        train_x, train_y, test_x, test_y, num_classes=10, epochs=_EPOCHS.value
    )
    result = {
        "workdir": _WORKDIR.value,
        "backbone": "untrained" if _UNTRAINED.value else "trained",
        "train_images": len(train_x),
        "validation_images": len(test_x),
        "feature_dim": int(train_x.shape[1]),
        "knn_top1": round(knn, 2),
        "linear_top1": round(probe["top1"], 2),
        "linear_top5": round(probe["top5"], 2),
        "probe_epochs": _EPOCHS.value,
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(_WORKDIR.value, "probe.json"), "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
