"""The run directory of train.py: resolved config, checkpoints, metrics.csv and the export.

Every file is written under a temporary name and renamed into place, so a process killed at any
moment leaves the previous complete version behind, never a half-written one.
"""

import csv
import io
import json
import os
import re
import shutil

from carl_tf.errors import RunDirectoryError
from carl_tf.run.config import config_from_json

METRICS_COLUMNS = (
    "epoch",
    "loss",
    "consistency",
    "kl",
    "kl_weight",
    "learning_rate",
    "prototypes_in_use",
    "knn_top1",
    "seconds",
)
_CHECKPOINT = re.compile(r"^ckpt-(\d{4,})\.keras$")
_CHECKPOINTS_KEPT = 2


class RunDirectory:
    """Paths and atomic writes of one training run.

    Layout: `config.json`, `metrics.csv`, `checkpoints/ckpt-NNNN.keras` (NNNN = epochs done),
    `tensorboard/`, `export/backbone/` (SavedModel) and `export/carl.keras`.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.config_path = os.path.join(self.path, "config.json")
        self.metrics_path = os.path.join(self.path, "metrics.csv")
        self.checkpoint_dir = os.path.join(self.path, "checkpoints")
        self.tensorboard_dir = os.path.join(self.path, "tensorboard")
        self.export_dir = os.path.join(self.path, "export")
        self.backbone_export = os.path.join(self.export_dir, "backbone")
        self.model_export = os.path.join(self.export_dir, "carl.keras")

    def is_finished(self) -> bool:
        """The export is renamed into place last, so its presence means the run completed."""
        return os.path.isdir(self.export_dir)

    def check_config(self, config: dict) -> None:
        """Refuses to continue a run in this directory that was started with another config.

        Raises:
            RunDirectoryError: naming the first fields that differ and the way out.
        """
        if not os.path.exists(self.config_path):
            return
        previous = config_from_json(self.config_path).to_dict()
        changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
        if changed:
            shown = ", ".join(f"{k} {previous.get(k)!r} -> {config.get(k)!r}" for k in changed[:3])
            raise RunDirectoryError(
                f"workdir {self.path} holds a run with a different config ({shown}); "
                "pass --overwrite to start afresh or choose another --workdir"
            )

    def create(self, config: dict, overwrite: bool) -> None:
        """Makes the directory and records `config`; `overwrite` first deletes any earlier run."""
        if overwrite and os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        write_atomically(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self):
        """The config this run recorded (a ConfigDict)."""
        return config_from_json(self.config_path)

    def latest_checkpoint(self) -> tuple[str | None, int]:
        """The newest complete checkpoint and the number of epochs it holds (None, 0 if none)."""
        found = []
        if os.path.isdir(self.checkpoint_dir):
            for name in os.listdir(self.checkpoint_dir):
                match = _CHECKPOINT.match(name)
                if match:
                    found.append((int(match.group(1)), os.path.join(self.checkpoint_dir, name)))
        if not found:
            return None, 0
        epochs, path = max(found)
        return path, epochs

    def save_checkpoint(self, model, epochs_done: int) -> None:
        """Saves model and optimizer after `epochs_done` epochs; keeps the newest two."""
        name = f"ckpt-{epochs_done:04d}.keras"
        temporary = os.path.join(self.checkpoint_dir, f".tmp-{name}")
        model.save(temporary)
        os.replace(temporary, os.path.join(self.checkpoint_dir, name))
        kept = sorted(
            (n for n in os.listdir(self.checkpoint_dir) if _CHECKPOINT.match(n)), reverse=True
        )
        for old in kept[_CHECKPOINTS_KEPT:]:
            os.remove(os.path.join(self.checkpoint_dir, old))

    def read_metrics(self) -> list[dict]:
        """Rows of metrics.csv as dicts of strings (empty if none yet)."""
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path, newline="") as f:
            return list(csv.DictReader(f))

    def keep_metrics_up_to(self, epochs_done: int) -> None:
        """Drops rows of epochs after the checkpoint resumed from: they will be trained again."""
        rows = [row for row in self.read_metrics() if int(row["epoch"]) <= epochs_done]
        self._write_metrics(rows)

    def append_metrics(self, row: dict) -> None:
        """Adds one epoch's row (rewriting the small file atomically keeps it never torn)."""
        self._write_metrics([*self.read_metrics(), row])

    def _write_metrics(self, rows: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(self.metrics_path, text.getvalue())


def write_atomically(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    temporary = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
