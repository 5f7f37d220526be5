"""The run directory of train.py: resolved config, checkpoints, metrics.csv and the export.

Every file is written under a temporary name and renamed into place, so a process killed at any
moment leaves the previous complete version behind, never a half-written one; a write that fails
(a full or read-only disk) removes its temporary file. One process at a time holds a run
directory (`RunDirectory.lock`). docs/faults.md lists what survives what.
"""

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
import socket
import zipfile
from collections.abc import Iterator

from carl_tf.errors import RunDirectoryError
from carl_tf.run.choices import EXTEND_MODES
from carl_tf.run.config import (
    DEFAULTS_BEFORE_RECORDED,
    RECORD_KEYS,
    SWITCHED_BY,
    config_from_json,
)

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

logger = logging.getLogger(__name__)


class RunDirectory:
    """Paths and atomic writes of one training run.

    Layout: `config.json`, `metrics.csv`, `checkpoints/ckpt-NNNN.keras` (NNNN = epochs done),
    `tensorboard/` and `export/backbone/` (SavedModel; both only where TensorFlow is installed),
    and `export/carl.keras`.
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

    @property
    def lock_path(self) -> str:
        """The lock file of `lock`, beside the directory."""
        return f"{self.path}.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run directory for this process; a second holder is refused at once.

        The lock is an `fcntl.flock` on `<workdir>.lock`, a file beside the directory rather
        than in it: `create(overwrite=True)` deletes the directory, and a lock on a deleted
        file would no longer exclude anyone. The file keeps the holder's pid and host for the
        refusal message and stays behind after the run (removing it would race a process
        about to lock it). The OS releases the lock on any exit, SIGKILL included, so the
        lock of a dead process is no obstacle. flock is only as good as the filesystem's:
        local disks honour it, some network filesystems do not.

        Raises:
            RunDirectoryError: If another process holds the lock, naming its pid and host.
        """
        path = self.lock_path
        try:
            # A new run's parent folder (runs/ on a fresh checkout) may not exist yet.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # "a+" opens without truncating: the holder's pid must stay readable when refused.
            handle = open(path, "a+", encoding="utf-8")
        except OSError as error:
            raise _write_error(path, error) from error
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunDirectoryError(
                    f"workdir {self.path} is in use by {holder} (lock {path})",
                    "wait for that run to finish or stop it, or choose another workdir",
                    fields=("workdir",),
                ) from error
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield  # closing the handle releases the lock

    def is_finished(self, epochs: int | None = None) -> bool:
        """Whether the run is complete: its export is renamed into place last.

        The export directory counts with or without `backbone/` (a run without TensorFlow
        exports `carl.keras` alone).

        Args:
            epochs: The epochs the run is to reach; an export of fewer (a run being extended)
                does not count. None: any export counts.
        """
        if not os.path.isdir(self.export_dir):
            return False
        if epochs is None:
            return True
        done = [int(row["epoch"]) for row in self.read_metrics() if row.get("epoch")]
        return max(done, default=0) >= epochs

    def check_config(self, config: dict, extend: str | None = None) -> dict:
        """The config to record for continuing this directory's run with `config`.

        A run may only continue with the config it started with, or train longer: `config`
        asks for more epochs (all else equal) and `extend` says what the schedules do then (see
        `EXTEND_MODES`). The extension is recorded under `extensions` in config.json, beside
        `resolved_precision` (the Keras policy `precision` stood for), which is not compared.

        Args:
            config: The command's config, as a dict.
            extend: `rescale`, `restart` or None.

        Returns:
            `config` for a new run; else the run's record, extended when asked.

        Raises:
            RunDirectoryError: naming the first fields that differ and the way out.
        """
        if not os.path.exists(self.config_path):
            return dict(config)
        previous = config_from_json(self.config_path).to_dict()
        extensions = previous.pop("extensions", [])
        previous.pop("resolved_precision", None)  # a fact of the machine, not a setting
        config = {k: v for k, v in config.items() if k not in RECORD_KEYS}
        changed = _changed_fields(previous, config, extensions)
        if not changed:
            return {**previous, **({"extensions": extensions} if extensions else {})}
        longer = set(changed) <= {"epochs", "kl_decay_epochs"} and (
            config["epochs"] > previous["epochs"]
        )
        if longer and extend in EXTEND_MODES:
            step = {"from_epochs": previous["epochs"], "to_epochs": config["epochs"]}
            record = {**config, "extensions": [*extensions, {**step, "schedules": extend}]}
            if extend == "restart":  # lambda keeps its decay, so it stays at its end value
                record["kl_decay_epochs"] = previous["kl_decay_epochs"]
            return record
        if longer:
            raise RunDirectoryError(
                f"workdir {self.path} holds a {previous['epochs']}-epoch run",
                f"to train it to {config['epochs']} epochs pass "
                + " or ".join(f"extend={mode} ({what})" for mode, what in EXTEND_MODES.items()),
                fields=("extend",),
            )
        shown = ", ".join(f"{k} {previous.get(k)!r} -> {config.get(k)!r}" for k in changed[:3])
        raise RunDirectoryError(
            f"workdir {self.path} holds a run with a different config ({shown})",
            "set overwrite to start afresh, or choose another workdir",
            fields=("overwrite", "workdir"),
        )

    def create(self, config: dict, overwrite: bool) -> None:
        """Makes the directory and records `config`; `overwrite` first deletes any earlier run.

        Raises:
            RunDirectoryError: If the disk refuses (read-only, full), naming the path.
        """
        try:
            if overwrite and os.path.exists(self.path):
                shutil.rmtree(self.path)
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        except OSError as error:
            raise _write_error(error.filename or self.path, error) from error
        write_atomically(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self):
        """The config this run recorded (a ConfigDict)."""
        return config_from_json(self.config_path)

    def checkpoints(self) -> list[tuple[int, str]]:
        """(epochs done, path) of every checkpoint file, newest first, readable or not."""
        found = []
        if os.path.isdir(self.checkpoint_dir):
            for name in os.listdir(self.checkpoint_dir):
                match = _CHECKPOINT.match(name)
                if match:
                    found.append((int(match.group(1)), os.path.join(self.checkpoint_dir, name)))
        return sorted(found, reverse=True)

    def latest_checkpoint(self) -> tuple[str | None, int]:
        """The newest readable checkpoint and the epochs it holds (None, 0 if there is none).

        A damaged newer checkpoint (a truncated file, a failing disk) is skipped with a
        warning, so a resume continues from the one before it.

        Raises:
            RunDirectoryError: If there are checkpoints but none is readable: starting afresh
                silently would throw the run away.
        """
        found = self.checkpoints()
        for epochs, path in found:
            problem = keras_file_problem(path)
            if problem is None:
                return path, epochs
            logger.warning("skipping the checkpoint %s: %s", path, problem)
        if found:
            raise RunDirectoryError(
                f"every checkpoint in {self.checkpoint_dir} is damaged (newest: {found[0][1]})",
                "restore one, or set overwrite to start afresh",
                fields=("overwrite",),
            )
        return None, 0

    def save_checkpoint(self, model, epochs_done: int) -> None:
        """Saves model and optimizer after `epochs_done` epochs; keeps the newest two.

        Raises:
            RunDirectoryError: If the disk refuses the write (full, read-only); the partial
                temporary file is removed and the previous checkpoints are left as they were.
        """
        name = f"ckpt-{epochs_done:04d}.keras"
        temporary = os.path.join(self.checkpoint_dir, f".tmp-{name}")
        try:
            model.save(temporary)
            os.replace(temporary, os.path.join(self.checkpoint_dir, name))
        except BaseException as error:  # Ctrl-C and SIGTERM too: leave no half-written file
            _remove_quietly(temporary)
            if isinstance(error, OSError):
                raise _write_error(os.path.join(self.checkpoint_dir, name), error) from error
            raise
        kept = sorted(
            (n for n in os.listdir(self.checkpoint_dir) if _CHECKPOINT.match(n)), reverse=True
        )
        for old in kept[_CHECKPOINTS_KEPT:]:
            os.remove(os.path.join(self.checkpoint_dir, old))

    def read_metrics(self) -> list[dict]:
        """Rows of metrics.csv as dicts of strings (empty if none yet).

        Raises:
            RunDirectoryError: If a row is not a row of numbers (a damaged or edited file).
        """
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path, newline="") as f:
            rows = list(csv.DictReader(f))
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            if not _is_metrics_row(row):
                raise RunDirectoryError(
                    f"{self.metrics_path} line {line} is damaged (not a row of numbers under "
                    f"the header {','.join(METRICS_COLUMNS)})",
                    "restore it, or set overwrite to start afresh",
                    fields=("overwrite",),
                )
        return rows

    def keep_metrics_up_to(self, epochs_done: int) -> None:
        """Keeps one row per epoch up to the checkpoint resumed from; later ones are redone.

        A fresh start (`epochs_done` 0) drops every row, the untrained kNN's epoch-0 row
        included, which it measures and writes again; a resume keeps the last row of each
        epoch, so a history is one row per epoch however often the run was killed.

        Raises:
            RunDirectoryError: If metrics.csv is gone while the run has checkpoints: resuming
                would silently lose the history of the epochs done.
        """
        if epochs_done and not os.path.exists(self.metrics_path) and self.checkpoints():
            raise RunDirectoryError(
                f"{self.metrics_path} is missing but {self.checkpoint_dir} holds "
                f"{epochs_done} epochs",
                "restore it, or set overwrite to start afresh",
                fields=("overwrite",),
            )
        by_epoch = {}
        for row in self.read_metrics() if epochs_done else []:
            if int(row["epoch"]) <= epochs_done:
                by_epoch[int(row["epoch"])] = row
        self._write_metrics([by_epoch[epoch] for epoch in sorted(by_epoch)])

    def append_metrics(self, row: dict) -> None:
        """Adds one epoch's row (rewriting the small file atomically keeps it never torn)."""
        self._write_metrics([*self.read_metrics(), row])

    def _write_metrics(self, rows: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: _figure(v) for k, v in row.items()} for row in rows])
        write_atomically(self.metrics_path, text.getvalue())


# 7 significant digits, float32's precision, which every figure carl_tf records has at most:
# 27.5, not the 27.500000000000004 of its float arithmetic.
_FIGURE_FORMAT = ".7g"


def round_figure(value: float) -> float:
    """`value` at float32's precision (`_FIGURE_FORMAT`), as evaluation.json records it."""
    return float(format(value, _FIGURE_FORMAT))


def _figure(value):
    """A metrics.csv cell: a float at float32's precision (2, 27.5), other values as they are."""
    return format(value, _FIGURE_FORMAT) if isinstance(value, float) else value


# Fields a run may change when it resumes: what the machine has, not what the run does.
NOT_COMPARED = ("memory_budget_mb",)


def _changed_fields(previous: dict, config: dict, extensions: list[dict]) -> list[str]:
    """Fields whose values differ; a restart extension's kept lambda decay does not count.

    Neither does a field of `NOT_COMPARED`, nor one that the run's record lacks (added to
    carl_tf after the run began) and that `config` leaves off (0, false or empty) or that does
    nothing while the field of `SWITCHED_BY` it depends on is off. A field of
    `DEFAULTS_BEFORE_RECORDED` that the record lacks held that value.
    """
    previous = {**DEFAULTS_BEFORE_RECORDED, **previous}

    def inert(k):
        return k in SWITCHED_BY and not config.get(SWITCHED_BY[k])

    changed = sorted(
        k
        for k in set(previous) | set(config)
        if k not in NOT_COMPARED
        and previous.get(k) != config.get(k)
        and (k in previous or (config.get(k) and not inert(k)))
    )
    last = extensions[-1] if extensions else None
    if last and last["schedules"] == "restart" and last["to_epochs"] == config.get("epochs"):
        changed = [k for k in changed if k != "kl_decay_epochs"]
    return changed


def write_atomically(path: str, text: str, elsewhere: tuple[str, str] | None = None) -> None:
    """Writes `text` to `path` through a temporary file and a rename.

    Args:
        path: The file to write.
        text: Its new content.
        elsewhere: How to write it to another place, for the message of a read-only disk: the
            fix and the argument it names (`("pass output=PATH ...", "output")`); None: a file
            of the run directory, written elsewhere by choosing another workdir.

    Raises:
        RunDirectoryError: If the disk refuses the write; `path` keeps its previous content
            and the temporary file is removed (also on Ctrl-C, which is re-raised).
    """
    temporary = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        _remove_quietly(temporary)
        if isinstance(error, OSError):
            raise _write_error(path, error, elsewhere) from error
        raise


def keras_file_problem(path: str) -> str | None:
    """Why the `.keras` file at `path` cannot be loaded, or None when it is a sound zip.

    A `.keras` file is a zip archive; checking every member's CRC catches the truncated or
    partly overwritten files a crash or a failing disk leaves, which Keras itself reports
    only as "File not found".
    """
    try:
        if not zipfile.is_zipfile(path):
            return "not a zip archive (truncated or overwritten)"
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"unreadable ({error})"
    return f"its member {broken} is damaged" if broken else None


def _is_metrics_row(row: dict) -> bool:
    """Whether a csv.DictReader row has an integer epoch and numbers (or blanks) elsewhere."""
    if None in row or not str(row.get("epoch") or "").isdigit():  # None: more cells than columns
        return False
    try:
        for value in row.values():
            if value:  # blank cells (and a short row's missing ones) are values not measured
                float(value)
    except ValueError:
        return False
    return True


_NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def _write_error(
    path: str, error: OSError, elsewhere: tuple[str, str] | None = None
) -> RunDirectoryError:
    """The one-line error of a write the disk refused, naming the file and the fix.

    A read-only or forbidden place will not change by rerunning, so its fix is `elsewhere`
    (None: choose another workdir); a full disk (or another failure) can be mended in place
    and the run resumed.
    """
    if error.errno in _NOT_WRITABLE:
        problem = f"cannot write to {path}: {_NOT_WRITABLE[error.errno]}"
        if elsewhere is not None:
            fix, field = elsewhere
            return RunDirectoryError(problem, fix, fields=(field,))
        return RunDirectoryError(problem, "choose a writable workdir", fields=("workdir",))
    folder = os.path.dirname(path)
    return RunDirectoryError(
        f"cannot write {path} ({error.strerror or error}); free space on {folder} or make it "
        "writable, then run the same command to resume"
    )


def _remove_quietly(path: str) -> None:
    """Removes a temporary file or directory if it is there (cleanup must not mask the error)."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
