"""CARL's paper recipe on one GPU under Keras's JAX backend, without TensorFlow, for M minutes.

One prepared command for a machine that has JAX with CUDA but neither TensorFlow nor internet
(docs/benchmarks.md, "A GPU run without TensorFlow"):

    python benchmarks/gpu_jax_run.py --wheels=benchmarks/gpu_wheels \
        --data=cifar10-train-jpg.tar.gz --minutes=6 --out=OUT

1. `--wheels=DIR` (from `benchmarks/gpu_wheels.sh`): installs, offline and without
   dependencies, each package of `REQUIREMENTS` whose module is missing, and carl_tf from this
   checkout (built with the setuptools wheel in DIR), then runs this script again in a fresh
   interpreter, which sees them.
2. Extracts the tarball (class folders of images, e.g. `train/<class>/*.jpg`) to a temporary
   directory and loads it with carl_tf's folder source, held in memory: the fixed 45,000 /
   5,000 split of `configs/cifar10_cpu.py` (holdout 0.1, split_seed 0), the 45,000 to train on
   and as the kNN bank, the 5,000 as the kNN queries.
3. Builds CARL as `carl_tf.training.methods.build_model` does from `configs/cifar10.py` (the
   paper's recipe: ResNet-18 of width 64, batch 256, K = 100, SGD at 0.03 x batch / 256 on a
   cosine over `--epochs`, lambda 4 -> 1.5 over half of them), under `mixed_bfloat16` on a
   GPU (float32 on a CPU; `--precision` overrides), its step compiled by XLA as JAX always does.
4. Trains with `fit` on `carl_tf.data.array_batches` until `--minutes` have passed since the
   first step (the one that compiles) or `--epochs` are done. The learning rate and lambda
   follow the `--epochs` schedule (200, the paper's), so a run cut by time is the start of the
   paper's run, not a short run of its own.

What it writes to `--out`, each file rewritten or appended as the run goes, so a run killed at
its time limit leaves what it measured:

* `curve.csv`: one row per epoch (epoch 0: the untrained backbone's kNN): steps, elapsed
  training seconds, images/s of the epoch (the compiling first step excluded; the kNN
  measurements are not in it), the loss terms, lambda, prototypes in use and, every
  `--knn_every` epochs and after the last, kNN top-1 (%) of the 5,000 queries against the
  45,000 (k = 200, T = 0.1, `carl_tf.KNNMonitor`).
* `summary.json`: images/s (median over epochs, and overall), peak device memory
  (`peak_bytes_in_use` of `jax.local_devices()[0].memory_stats()`; null where the device does
  not report it, as on CPUs), device kind, JAX/Keras/Python versions, precision, minutes,
  epochs and steps done, the compile and set-up times, last and best kNN, the config; its
  `status` is `running` until the end.
* `run.log`: this script's log lines.

`--smoke` shrinks the model and batch for a CPU check in seconds (tests/test_gpu_jax_run.py).
"""

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Module -> the requirement that provides it: what this run imports beyond JAX and its numpy,
# scipy and ml_dtypes (benchmarks/gpu_wheels.sh downloads exactly these).
REQUIREMENTS = {
    "keras": "keras==3.15.1",
    "absl": "absl-py",
    "rich": "rich",
    "markdown_it": "markdown-it-py",
    "mdurl": "mdurl",
    "pygments": "pygments",
    "namex": "namex",
    "packaging": "packaging",
    "optree": "optree",
    "typing_extensions": "typing-extensions",
    "ml_collections": "ml_collections",
    "yaml": "pyyaml",
    "PIL": "pillow",
}
# The Keras minor version carl_tf is tested with (pyproject.toml caps it).
KERAS_SERIES = "3.15."
# Set in the interpreter that runs after an install, so a package that stays missing is an
# error rather than a loop of installs.
_INSTALLED_ENV = "CARL_GPU_RUN_INSTALLED"
CURVE_FIELDS = (
    "epoch",
    "steps",
    "train_s",
    "images_per_s",
    "loss",
    "consistency",
    "kl",
    "kl_weight",
    "prototypes_in_use",
    "knn_top1",
    "knn_s",
)

logger = logging.getLogger("gpu_jax_run")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; stdlib only, as it is read before any wheel is installed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="tarball of class folders of images")
    parser.add_argument("--minutes", type=float, required=True, help="training time budget")
    parser.add_argument("--out", required=True, help="directory for curve.csv, summary.json")
    parser.add_argument("--wheels", help="folder of gpu_wheels.sh: install what is missing")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=200, help="length of the schedules")
    parser.add_argument("--knn_every", type=int, default=5, help="epochs between kNN checks")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "mixed_bfloat16"),
        help="auto: mixed_bfloat16 on a GPU or TPU, float32 on a CPU",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="ResNet-18 of width 8, batch 32: a CPU check"
    )
    args = parser.parse_args(argv)
    if args.minutes < 0 or args.knn_every < 1 or args.epochs < 1:
        parser.error("--minutes must be >= 0, --knn_every and --epochs >= 1")
    return args


def missing_requirements() -> list[str]:
    """The requirements of `REQUIREMENTS` whose module is missing (or Keras of another minor)."""
    return [
        requirement
        for module, requirement in REQUIREMENTS.items()
        if importlib.util.find_spec(module) is None
        or (module == "keras" and not _version("keras").startswith(KERAS_SERIES))
    ]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def carl_tf_is_this_checkout() -> bool:
    """Whether carl_tf is installed in editable mode from this checkout (a dev virtualenv).

    Any other install, or none, is replaced by one built from this checkout, so the run always
    trains the code beside this script. Every carl_tf on the path is looked at: a checkout's
    own `carl_tf.egg-info` (left by a build) would hide the installed one from a plain lookup.
    """
    for distribution in importlib.metadata.distributions(name="carl_tf"):
        origin = json.loads(distribution.read_text("direct_url.json") or "{}")
        editable = origin.get("dir_info", {}).get("editable", False)
        if editable and origin.get("url", "").rstrip("/") == REPO.as_uri():
            return True
    return False


def install_missing(wheels: str) -> bool:
    """Installs, from `wheels` only, what this run lacks; True if anything was installed."""
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels]
    # A system Python marked externally managed (PEP 668) would refuse; the device is scratch.
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    missing = missing_requirements()
    if missing:
        logger.info("installing from %s: %s", wheels, " ".join(missing))
        subprocess.run([*pip, "--no-deps", *missing], check=True, env=env)
    if carl_tf_is_this_checkout():
        logger.info("carl_tf: the editable install of this checkout")
    else:
        # pip builds the wheel in an isolated environment, with setuptools from `wheels`.
        logger.info("installing carl_tf from %s", REPO)
        subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO)], check=True, env=env)
        missing.append("carl_tf")
    if not missing:
        logger.info("every package this run needs is installed")
    return bool(missing)


def prepare(argv: list[str]) -> None:
    """Before Keras is imported: installs what is missing and restarts, picks the backend."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    if args.wheels and not os.environ.get(_INSTALLED_ENV):
        if install_missing(args.wheels):
            # A fresh interpreter sees the new packages (and no half-imported old ones).
            os.environ[_INSTALLED_ENV] = "1"
            os.execv(sys.executable, [sys.executable, __file__, *argv])
    still_missing = missing_requirements()
    if still_missing:
        sys.exit(f"error: missing {' '.join(still_missing)}; pass --wheels=DIR of gpu_wheels.sh")
    # A process picks its backend at the first `import keras`.
    os.environ["KERAS_BACKEND"] = "jax"


if __name__ == "__main__":
    prepare(sys.argv[1:])

import jax  # noqa: E402
import keras  # noqa: E402

from carl_tf import data  # noqa: E402
from carl_tf.configs import cifar10, cifar10_cpu  # noqa: E402
from carl_tf.evaluation.monitor import KNNMonitor  # noqa: E402
from carl_tf.method.schedules import kl_weight_schedule  # noqa: E402
from carl_tf.training.methods import build_model  # noqa: E402


def run_config(args: argparse.Namespace, folder: Path):
    """`configs/cifar10.py` (the paper's recipe) on the folder, with cifar10_cpu's split."""
    config = cifar10.get_config()
    split = cifar10_cpu.get_config()
    config.dataset = f"folder:{folder}"
    config.holdout, config.split_seed = split.holdout, split.split_seed
    config.batch_size, config.backbone_width = args.batch_size, args.width
    config.image_size, config.epochs = args.image_size, args.epochs
    config.knn_every = args.knn_every
    if args.smoke:
        config.batch_size, config.backbone_width, config.projection_hidden_dim = 32, 8, 64
    return config


def resolve_policy(precision: str) -> str:
    """`auto`: mixed_bfloat16 on accelerators (H100/H200 tensor cores run it), else float32."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"


def extract(tarball: str, into: str) -> Path:
    """Extracts `tarball` into `into`; returns the folder whose sub-folders are the classes.

    That is the extraction root, or the folder below it while there is only one (CIFAR-10's
    tarball holds `train/<class>/`).
    """
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse links and paths out
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
    root = Path(into)
    while True:
        entries = list(root.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def device_figures() -> dict:
    """Kind, platform and memory of the first device; memory fields null where unreported."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.local_device_count(),
        "peak_device_memory_bytes": stats.get("peak_bytes_in_use"),
        "device_memory_limit_bytes": stats.get("bytes_limit"),
    }


class BudgetRun(keras.callbacks.Callback):
    """Stops `fit` when the budget is spent; times, measures and writes each epoch.

    The budget starts when the first step has run (compiled and executed), so compile time,
    which depends on the machine rather than on the method, neither counts against it nor
    enters images/s. Each epoch's images/s is its timed steps' images over their wall time,
    read once Keras hands over the epoch's figures (which waits for the device). The kNN
    measurement runs after that and is timed apart.

    Args:
        minutes: Training time after the first step, kNN measurements included.
        monitor: The KNNMonitor whose `measure` scores the backbone.
        knn_every: Epochs between kNN measurements (also after the last epoch).
        batch_size: Images per step.
        out: Directory of curve.csv and summary.json.
        summary: The summary's fixed fields (versions, config, set-up times).
    """

    def __init__(self, minutes, monitor, knn_every, batch_size, out: Path, summary: dict):
        super().__init__()
        self.budget_s, self.monitor, self.knn_every = 60.0 * minutes, monitor, knn_every
        self.batch_size, self.summary = batch_size, summary
        self.curve, self.summary_path = out / "curve.csv", out / "summary.json"
        self.deadline = None
        self.steps = 0
        self.train_s = 0.0
        self.rates, self.knn = [], []

    def on_train_begin(self, logs=None):
        self.monitor.set_model(self.model)
        self.write_row({"epoch": 0, "steps": 0, "train_s": 0.0, **self.measure_knn()})

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.epoch_steps, self.timed_steps = time.monotonic(), 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self.epoch_steps += 1
        if self.deadline is None:
            float(logs["loss"])  # waits for the first step to finish
            now = time.monotonic()
            self.summary["compile_s"] = round(now - self.epoch_start, 2)
            self.deadline, self.epoch_start = now + self.budget_s, now
            logger.info("first step (compile and run): %.1f s", self.summary["compile_s"])
        else:
            self.timed_steps += 1
            if time.monotonic() >= self.deadline:
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        figures = {name: float(value) for name, value in (logs or {}).items()}  # waits
        seconds = time.monotonic() - self.epoch_start
        self.steps += self.epoch_steps
        self.train_s += seconds
        rate = self.timed_steps * self.batch_size / seconds if self.timed_steps else None
        if rate:
            self.rates.append(rate)
        row = {"epoch": epoch + 1, "steps": self.steps, "train_s": round(self.train_s, 2)}
        row["images_per_s"] = round(rate, 1) if rate else None
        row.update({k: figures.get(k) for k in CURVE_FIELDS if k in figures})
        last = self.model.stop_training or epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.knn_every == 0 or last:
            row.update(self.measure_knn())
        self.write_row(row)
        logger.info(
            "epoch %d · %d steps · %.0f s · %s images/s · loss %.4f · prototypes %.1f%s",
            epoch + 1,
            self.steps,
            self.train_s,
            f"{rate:.0f}" if rate else "-",
            figures.get("loss", float("nan")),
            figures.get("prototypes_in_use", float("nan")),
            f" · kNN {row['knn_top1']:.2f}%" if "knn_top1" in row else "",
        )

    def on_train_end(self, logs=None):
        spent = self.deadline is not None and time.monotonic() >= self.deadline
        self.write_summary("time budget spent" if spent else "epochs done")

    def measure_knn(self) -> dict:
        """kNN top-1 (%) of the backbone now, and the seconds it took, as curve fields."""
        start = time.monotonic()
        top1 = round(self.monitor.measure(), 2)
        self.knn.append(top1)
        return {"knn_top1": top1, "knn_s": round(time.monotonic() - start, 2)}

    def write_row(self, row: dict) -> None:
        """Appends one row to curve.csv and rewrites summary.json, both flushed to disk."""
        new = not self.curve.exists()
        with open(self.curve, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self.epochs_done = row["epoch"]
        self.write_summary("running")

    def write_summary(self, status: str) -> None:
        """Rewrites summary.json whole (through a rename, so it is never half written)."""
        trained = self.steps * self.batch_size
        timed = trained - (self.batch_size if self.steps else 0)
        self.summary.update(
            status=status,
            epochs_done=self.epochs_done,
            steps_done=self.steps,
            images_trained=trained,
            train_s=round(self.train_s, 2),
            images_per_s=round(statistics.median(self.rates), 1) if self.rates else None,
            images_per_s_overall=round(timed / self.train_s, 1) if self.train_s else None,
            knn_top1_last=self.knn[-1] if self.knn else None,
            knn_top1_best=max(self.knn) if self.knn else None,
            peak_host_memory_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **device_figures(),
        )
        temporary = self.summary_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.summary, indent=2) + "\n")
        os.replace(temporary, self.summary_path)


def load_splits(config) -> tuple[tuple, tuple]:
    """The folder's `(images, labels)` training split and its held-out kNN queries."""
    splits = [
        data.load_source(
            config.dataset,
            split=split,
            image_size=config.image_size,
            holdout=config.holdout,
            seed=config.split_seed,
        )
        for split in ("train", "test")
    ]
    return tuple(data.labelled_arrays(source) for source in splits)


def log_to(out: Path) -> None:
    """Starts `out` afresh (a run writes its own files) and copies the log to run.log."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("curve.csv", "summary.json", "run.log"):
        (out / name).unlink(missing_ok=True)
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger().addHandler(handler)


def main(args: argparse.Namespace) -> None:
    """Unpacks, loads, builds and trains for the budget, writing to `args.out` as it goes."""
    out = Path(args.out)
    log_to(out)
    policy = resolve_policy(args.precision)
    keras.mixed_precision.set_dtype_policy(policy)
    logger.info("JAX %s on %s; Keras %s", jax.__version__, jax.devices(), keras.__version__)
    logger.info("precision %s", policy)
    extracted = tempfile.mkdtemp(prefix="carl_gpu_run_")
    try:
        start = time.monotonic()
        config = run_config(args, extract(args.data, extracted))
        extract_s, start = time.monotonic() - start, time.monotonic()
        (train_images, train_labels), queries = load_splits(config)
        load_s, start = time.monotonic() - start, time.monotonic()
        logger.info(
            "%d training images, %d kNN queries: unpacked in %.1f s, decoded in %.1f s",
            len(train_images),
            len(queries[0]),
            extract_s,
            load_s,
        )
        keras.utils.set_random_seed(config.seed)
        steps_per_epoch = len(train_images) // config.batch_size
        model = build_model(config, steps_per_epoch)
        summary = {
            "minutes": args.minutes,
            "smoke": args.smoke,
            "precision": policy,
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "keras": keras.__version__,
            "python": platform.python_version(),
            "train_images": len(train_images),
            "knn_queries": len(queries[0]),
            "steps_per_epoch": steps_per_epoch,
            "extract_s": round(extract_s, 2),
            "load_s": round(load_s, 2),
            "build_s": round(time.monotonic() - start, 2),
            "images_per_s_note": "median of epochs; the first (compiling) step excluded",
            "config": config.to_dict(),
        }
        monitor = KNNMonitor(
            (train_images, train_labels),
            queries,
            k=config.knn_k,
            temperature=config.knn_temperature,
        )
        model.fit(
            data.array_batches(train_images, config.batch_size, config.seed),
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=[
                kl_weight_schedule(config),
                BudgetRun(args.minutes, monitor, config.knn_every, config.batch_size, out, summary),
            ],
            verbose=0,
        )
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
    keys = ("status", "epochs_done", "images_per_s", "knn_top1_last", "peak_device_memory_bytes")
    logger.info("wrote %s: %s", out, json.dumps({key: summary[key] for key in keys}))


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
