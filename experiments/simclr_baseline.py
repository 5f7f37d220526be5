"""SimCLR (Chen et al. 2020, arXiv 2002.05709), the baseline with negatives, on a carl_tf recipe.

CARL's Table 1 compares CARL with SimCLR under one recipe. This script trains SimCLR's NT-Xent
loss with everything else taken from a carl_tf config, exactly as train.py builds a CARL run: the
backbone (`build_backbone`), the projection head (`ProjectionHead`), the views (`SimCLRAugment`
on the pipeline's batches or crop pairs), the global batch, SGD with the (warmup +) cosine
learning rate, the epochs, the seed, the precision and the kNN monitor. Only the objective
differs: no assigner, no prototypes, no lambda.

Temperature: 0.2 by default, the value of solo-learn's CIFAR SimCLR recipe (ResNet-18 at 32 px,
batch 256), the public recipe closest to carl_tf's CIFAR presets; SimCLR's own CIFAR-10 setting,
0.5, comes with LARS, batches of 512 to 4096 and hundreds of epochs. `--temperature` sets it.

The main CPU protocol (configs/cifar10_cpu.py: the 45,000 / 5,000 split of the CIFAR-10 JPEG
folder, 30 epochs), then the kNN and features-mode linear probes experiments/run_queue.sh runs
for CARL, on the run's own validation split::

    mkdir -p /tmp/cifar10 && tar xzf ../shared/data/cifar10-train-jpg.tar.gz -C /tmp/cifar10
    python experiments/simclr_baseline.py --config=cifar10_cpu \\
        --dataset=folder:/tmp/cifar10/train --workdir=runs/simclr-cifar10_cpu
    python evaluate.py --model=runs/simclr-cifar10_cpu --protocol=knn,linear \\
        --linear=features --plots=false --output=runs/simclr-cifar10_cpu/probe.json

A one-epoch check on the offline digits::

    python experiments/simclr_baseline.py --config=digits:smoke --epochs=1 --workdir=/tmp/simclr

Any field of the config is set with `--config.FIELD=VALUE` (e.g. `--config.crop_min_scale=0.08`),
the usual ones with `--epochs`, `--batch_size`, `--learning_rate` (at batch 256, scaled by
batch_size / 256 as for CARL), `--train_subset`, `--seed` and `--dataset`.

The workdir has train.py's layout, so evaluate.py reads it like a CARL run: `config.json` (the
resolved config plus `method: simclr` and `temperature`), `metrics.csv` (epoch 0 is the
untrained backbone's kNN top-1; then per epoch the loss, the learning rate and, every
`knn_every` epochs and at the last, the kNN top-1), `export/backbone/` (a SavedModel whose
`serving_default` maps images `(N, H, W, 3)` in [0, 255] to `{"features": (N, D)}`) and
`export/carl.keras`, the file name evaluate.py loads from a run directory: here it holds the bare
backbone, as there is no assigner. There are no checkpoints: a run is not resumed, and an
existing workdir is only replaced with `--overwrite`.

Strategies: the NT-Xent is computed on the global batch: every replica gathers both views'
projections from all replicas (`all_gather`, whose gradient sums over replicas), so each holds
the same global loss, scaled by 1 / replicas for Keras's gradient sum. Multi-worker runs are
refused (one process only).
"""

import argparse
import ast
import importlib
import importlib.util
import logging
import os
import shutil
import sys

import keras
import tensorflow as tf
from keras import ops

from carl_tf.cli.common import run_main
from carl_tf.errors import TrainingFailed, UsageError
from carl_tf.evaluation.monitor import KNNMonitor
from carl_tf.method import distributed
from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.backbones import build_backbone
from carl_tf.method.heads import ProjectionHead
from carl_tf.method.inputs import split_batch
from carl_tf.method.optimizer import build_optimizer
from carl_tf.run.callbacks import MetricsRecorder, StopOnNaN
from carl_tf.run.config import validate_config
from carl_tf.run.progress import EpochLog
from carl_tf.run.rundir import RunDirectory
from carl_tf.training import pretrain, worker_input

logger = logging.getLogger("carl_tf.simclr_baseline")  # shown by carl_tf's log setup

DEFAULT_TEMPERATURE = 0.2
# Flags that set a config field directly; any other field takes --config.FIELD=VALUE.
SIMPLE_FIELDS = {
    "dataset": str,
    "epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "train_subset": int,
    "seed": int,
}
# Far below any cosine similarity / temperature: masks a logit without an infinity's NaN risk.
_MASKED = -1e9


def nt_xent(z_a, z_b, temperature: float):
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1), averaged over all 2N anchors.

    The 2N projections are L2-normalized; each is the anchor of one row of the (2N, 2N) cosine
    similarities divided by `temperature`, whose positive is the other view of its image and
    whose negatives are the other 2N - 2 projections (its self-similarity is masked out).

    Args:
        z_a: Projections of the first views, `(N, D)`.
        z_b: Projections of the second views, `(N, D)`; row i is the positive of `z_a[i]`.
        temperature: tau, in (0, inf).

    Returns:
        The mean loss, a float32 scalar.
    """
    n = ops.shape(z_a)[0]
    z = ops.concatenate([ops.cast(z_a, "float32"), ops.cast(z_b, "float32")], axis=0)
    z = z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-12)
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2N, 2N)
    index = ops.arange(2 * n)
    logits = ops.where(index[:, None] == index[None, :], _MASKED, logits)
    positives = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)  # (2N,)
    log_probabilities = ops.log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(log_probabilities, positives[:, None], axis=1)
    return -ops.mean(picked)


def gather_replicas(x):
    """`x` `(n, D)` of every replica of the step, concatenated in replica order `(N, D)`.

    Identity on one replica. The gradient of `all_gather` is the sum over replicas of the
    upstream gradients, cut to this replica's rows.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_gather(x, axis=0)


class SimCLR(keras.Model):
    """Backbone -> projection head, trained with NT-Xent over the global batch.

    Takes the batches `CARL.fit` takes (`carl_tf.method.inputs`): raw images, whose two views
    `augmenter` makes on device, or the pipeline's crop pairs, which it finishes without
    cropping again. `model.backbone` is the encoder the probes evaluate.

    Args:
        backbone: Maps images `(N, H, W, 3)` in [0, 255] to features `(N, D)`.
        projection_head: Maps features to the projections the loss compares.
        augmenter: A `SimCLRAugment` at the backbone's input size.
        temperature: tau of `nt_xent`.
    """

    def __init__(self, backbone, projection_head, augmenter, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.projection_head, self.augmenter = backbone, projection_head, augmenter
        self.temperature = float(temperature)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.projection_head.build((None, backbone.output_shape[-1]))
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def project(self, images, training=False):
        """Projections `(N, projection_dim)` of images."""
        return self.projection_head(self.backbone(images, training=training), training=training)

    def call(self, images, training=False):
        return self.project(images, training=training)

    def train_step(self, data):
        batch = split_batch(data)
        if batch.views is not None:
            view_a, view_b = batch.views
        elif batch.crops is not None:
            view_a, view_b = (
                self.augmenter(batch.crops[:, i], training=True, crop=False) for i in range(2)
            )
        else:
            view_a, view_b = (self.augmenter(batch.images, training=True) for _ in range(2))
        with tf.GradientTape() as tape:
            z_a = gather_replicas(ops.cast(self.project(view_a, training=True), "float32"))
            z_b = gather_replicas(ops.cast(self.project(view_b, training=True), "float32"))
            loss = nt_xent(z_a, z_b, self.temperature)  # the global loss, on every replica
            # Keras sums the replicas' gradients; every replica holds the same global loss.
            scaled_loss = self.optimizer.scale_loss(loss / distributed.num_replicas())
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def build_simclr(config, steps_per_epoch: int, temperature: float) -> SimCLR:
    """The SimCLR model of a config, compiled with the optimizer train.py gives CARL."""
    backbone = build_backbone(
        config.backbone, width=config.backbone_width, image_size=config.image_size
    )
    head = ProjectionHead(
        (config.projection_hidden_dim,) * config.projection_hidden_layers,
        config.projection_dim,
        name="projection_head",
    )
    augmenter = SimCLRAugment(
        image_size=config.image_size,
        crop_scale=(config.crop_min_scale, 1.0),
        crop_ratio=pretrain.CROP_RATIO,
        blur_probability=config.blur_probability,
    )
    model = SimCLR(backbone, head, augmenter, temperature)
    model.compile(
        optimizer=build_optimizer(config, model, steps_per_epoch),
        jit_compile=config.jit_compile,
    )
    return model


def export_backbone(backbone: keras.Model, export_dir: str) -> None:
    """Writes `export_dir/backbone/` (SavedModel) and `export_dir/carl.keras` (the backbone).

    Both go into a temporary sibling renamed into place once complete, so an interrupted
    export leaves no `export_dir`.
    """
    temporary = f"{export_dir}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    height, width = backbone.input_shape[1:3]
    images = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.add_endpoint(
        "serving_default",
        lambda x: {"features": backbone(x, training=False)},
        input_signature=[images],
    )
    archive.write_out(os.path.join(temporary, "backbone"), verbose=False)
    backbone.save(os.path.join(temporary, "carl.keras"))
    os.replace(temporary, export_dir)


def train_simclr(config, workdir: str, *, temperature: float, overwrite: bool = False) -> dict:
    """One SimCLR run of `config` into `workdir`; returns the untrained and final kNN top-1.

    Raises:
        UsageError: For a config, source, strategy or workdir that cannot work.
        TrainingFailed: If the loss became NaN (nothing exported).
    """
    validate_config(config)
    if not temperature > 0:
        raise UsageError(f"--temperature must be positive, got {temperature}")
    run_dir = RunDirectory(workdir)
    if os.path.exists(run_dir.config_path) and not overwrite:
        raise UsageError(f"{run_dir.path} holds a run; pass --overwrite or another --workdir")
    policy, strategy = pretrain.setup_runtime(config)
    if worker_input.num_input_pipelines(strategy) > 1:
        raise UsageError("simclr_baseline.py runs in one process; use a single-host --strategy")
    source = pretrain.load_training_source(config)
    train_data = pretrain.training_data(config, source, strategy)
    steps = worker_input.steps_per_epoch(source.num_examples, config.batch_size, 1)
    knn_sets = pretrain.load_knn_sets(config)
    with strategy.scope():
        model = build_simclr(config, steps, temperature)

    with run_dir.lock():
        record = {**config.to_dict(), "resolved_precision": policy}
        run_dir.create({**record, "method": "simclr", "temperature": temperature}, overwrite)
        run_dir.keep_metrics_up_to(0)
        nan_guard = StopOnNaN()
        callbacks, knn = [], {}
        if knn_sets:
            monitor = KNNMonitor(
                *knn_sets,
                every=config.knn_every,
                epochs=config.epochs,
                k=config.knn_k,
                temperature=config.knn_temperature,
            )
            monitor.set_model(model)
            knn[0] = monitor.measure()
            logger.info("kNN top-1 of the untrained backbone: %.2f%%", knn[0])
            run_dir.append_metrics({"epoch": 0, "knn_top1": knn[0]})
            callbacks.append(monitor)
        callbacks += [nan_guard, MetricsRecorder(run_dir), EpochLog(config.epochs)]
        logger.info(
            "SimCLR (temperature %g) on %d images of %s, %d steps per epoch, workdir %s",
            temperature,
            source.num_examples,
            source.description,
            steps,
            run_dir.path,
        )
        history = model.fit(
            train_data,
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,  # make_dataset reshuffles every epoch
        )
        if nan_guard.failed_at:
            epoch, batch = nan_guard.failed_at
            raise TrainingFailed(
                f"the loss became NaN at epoch {epoch}, batch {batch}; lower --learning_rate "
                f"(now {config.learning_rate}) and rerun with --overwrite"
            )
        export_backbone(model.backbone, run_dir.export_dir)
    if "knn_top1" in history.history:
        knn[config.epochs] = history.history["knn_top1"][-1]
    return knn


def load_config(spec: str):
    """The config of a preset name or a `.py` file, with its optional `:ARG`."""
    target, _, arg = spec.partition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location("simclr_config", target)
        if module_spec is None or not os.path.isfile(target):
            raise UsageError(f"no config file {target}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(f"carl_tf.configs.{target}")
        except ModuleNotFoundError as error:
            raise UsageError(f"no preset {target!r} in carl_tf.configs") from error
    try:
        return module.get_config(arg or None)
    except ValueError as error:  # a preset's unknown argument
        raise UsageError(str(error)) from error


def set_field(config, field: str, text: str) -> None:
    """Sets `config.field` from command-line text, parsed as the field's current type."""
    if field not in config:
        raise UsageError(f"the config has no field {field!r}; carl_tf/configs/common.py lists them")
    current = config[field]
    if isinstance(current, bool):
        value = text.lower() in ("1", "true", "yes")
    elif isinstance(current, str):
        value = text
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise UsageError(f"--config.{field}={text}: not a number") from error
        value = float(value) if isinstance(current, float) else value
    config[field] = value


def parse_arguments(argv: list[str]):
    """The parsed flags and the resolved config (preset, then simple flags, then --config.*)."""
    parser = argparse.ArgumentParser(description="SimCLR on a carl_tf recipe.", allow_abbrev=False)
    parser.add_argument("--config", default="cifar10_cpu", help="NAME[:ARG] or PATH.py[:ARG]")
    parser.add_argument("--workdir", required=True, help="Run directory (train.py's layout).")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--overwrite", action="store_true", help="Replace a run in --workdir.")
    for field, kind in SIMPLE_FIELDS.items():
        parser.add_argument(f"--{field}", type=kind, default=None)
    flags, rest = parser.parse_known_args(argv)
    config = load_config(flags.config)
    for field in SIMPLE_FIELDS:
        if getattr(flags, field) is not None:
            config[field] = getattr(flags, field)
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            raise UsageError(f"unknown argument {item}; fields take --config.FIELD=VALUE")
        field, _, text = item[len("--config.") :].partition("=")
        set_field(config, field, text)
    return flags, config


def main(argv: list[str]) -> int:
    flags, config = parse_arguments(argv[1:])
    knn = train_simclr(
        config, flags.workdir, temperature=flags.temperature, overwrite=flags.overwrite
    )
    if 0 in knn and config.epochs in knn:
        print(f"kNN top-1: untrained {knn[0]:.2f}% -> trained {knn[config.epochs]:.2f}%")
    print(f"exported the backbone to {os.path.join(os.path.abspath(flags.workdir), 'export')}")
    return 0


def _flag_name(field: str) -> str:
    return f"--{field}" if field in SIMPLE_FIELDS else f"--config.{field}"


if __name__ == "__main__":
    sys.exit(run_main(main, _flag_name)(sys.argv))
