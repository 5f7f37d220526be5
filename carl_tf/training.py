"""One CARL pretraining run from a config: data, model, resume, fit, export (train.py's body)."""

import dataclasses
import shutil
import sys

import keras
import numpy as np
from absl import logging

from carl_tf import backbones, data
from carl_tf.augment import SimCLRAugment
from carl_tf.callbacks import CollapseGuard, KLWeightSchedule, KNNMonitor, RunRecorder, StopOnNaN
from carl_tf.cli import UsageError
from carl_tf.export import export_run
from carl_tf.model import CARL
from carl_tf.precision import set_precision
from carl_tf.strategy import is_chief, make_strategy, worker_workdir
from carl_tf.workdir import RunDirectory


def validate_config(config) -> None:
    """Rejects settings that cannot train, with a one-line message naming the flag to fix."""
    positive = ("epochs", "batch_size", "image_size", "backbone_width", "projection_dim")
    for name in positive:
        if config[name] <= 0:
            raise UsageError(f"{name} must be positive, got {config[name]}; fix --{name}")
    if config.num_prototypes < 2:
        raise UsageError(
            f"num_prototypes must be at least 2, got {config.num_prototypes}; fix --num_prototypes"
        )
    for name in ("kl_start", "kl_end", "kl_decay_epochs", "learning_rate", "weight_decay"):
        if config[name] < 0:
            raise UsageError(f"{name} must not be negative, got {config[name]}; fix --{name}")
    for name in ("knn_every", "train_subset", "warmup_epochs", "collapse_patience"):
        if config[name] < 0:
            raise UsageError(
                f"{name} must not be negative, got {config[name]}; fix --config.{name}"
            )
    if config.warmup_epochs >= config.epochs:
        raise UsageError(
            f"warmup_epochs ({config.warmup_epochs}) must be fewer than epochs ({config.epochs})"
        )
    if config.backbone not in backbones.BACKBONES:
        raise UsageError(
            f"unknown backbone {config.backbone!r}; choose --backbone from "
            f"{', '.join(backbones.BACKBONES)}"
        )
    if not 0.0 <= config.holdout < 1.0:
        raise UsageError(f"holdout must be in [0, 1), got {config.holdout}; fix --holdout")


def build_model(config, steps_per_epoch: int) -> CARL:
    """The CARL model of a config, compiled with SGD and the (warmup +) cosine learning rate."""
    backbone = backbones.build_backbone(
        config.backbone, width=config.backbone_width, image_size=config.image_size
    )
    augmenter = SimCLRAugment(
        image_size=config.image_size,
        crop_scale=(config.crop_min_scale, 1.0),
        blur_probability=config.blur_probability,
    )
    model = CARL(
        backbone,
        num_prototypes=config.num_prototypes,
        projection_hidden_units=(config.projection_hidden_dim,) * config.projection_hidden_layers,
        projection_dim=config.projection_dim,
        augmenter=augmenter,
        kl_weight=config.kl_start,
        symmetric=config.symmetric,
    )
    peak = config.learning_rate * config.batch_size / 256
    warmup_steps = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
        decay_steps=(config.epochs - config.warmup_epochs) * steps_per_epoch,
    )
    optimizer = keras.optimizers.SGD(
        schedule, momentum=config.momentum, weight_decay=config.weight_decay or None
    )
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    return model


def load_training_source(config) -> data.ImageSource:
    """The pretraining images, cut to a fixed seeded subset when `train_subset` asks."""
    source = data.load_source(
        config.dataset,
        split=config.train_split,
        data_dir=config.data_dir or None,
        image_size=config.image_size,
        holdout=config.holdout,
        seed=config.split_seed,
        download=config.download,
    )
    if not config.train_subset or config.train_subset >= source.num_examples:
        return source
    images, labels = data.source_arrays(source)
    keep = np.sort(
        np.random.default_rng(config.split_seed).permutation(len(images))[: config.train_subset]
    )
    return dataclasses.replace(
        source, arrays=(images[keep], labels[keep]), stream=None, num_examples=len(keep)
    )


def load_knn_sets(config):
    """Labelled (bank, queries) arrays for the kNN monitor, or None with the reason logged."""
    if not config.knn_every:
        return None
    holdout_source = config.dataset.partition(":")[0] in ("folder", "npz", "digits")
    if holdout_source and not config.holdout:
        logging.info("kNN monitor skipped: set --holdout to hold out labelled images")
        return None
    sets = []
    for split in (config.knn_train_split, config.knn_test_split):
        source = data.load_source(
            config.dataset,
            split=split,
            data_dir=config.data_dir or None,
            image_size=config.image_size,
            holdout=config.holdout,
            seed=config.split_seed,
        )
        if source.num_classes is None:
            logging.info("kNN monitor skipped: %s has no labels", source.description)
            return None
        images, labels = data.source_arrays(source)
        labelled = labels >= 0
        sets.append((images[labelled], labels[labelled]))
    return tuple(sets)


def pretrain(config, workdir: str, overwrite: bool = False) -> int:
    """Runs (or resumes) one pretraining run; returns the process exit code."""
    validate_config(config)
    keras.utils.set_random_seed(config.seed)
    try:
        policy = set_precision(config.precision, strategy=config.strategy).name
        strategy = make_strategy(config.strategy)
    except ValueError as error:  # an unknown --precision or --strategy
        raise UsageError(str(error)) from error
    logging.info("precision %s: Keras dtype policy %s", config.precision, policy)
    chief_dir = RunDirectory(workdir)
    run_dir = RunDirectory(worker_workdir(workdir, strategy))
    if not overwrite:
        run_dir.check_config(config.to_dict())
        # The chief's export is the one finish line: a worker's own scratch directory is gone
        # after a finished run, and a worker that trained alone would wait for the chief forever.
        if chief_dir.is_finished():
            print(f"{workdir} holds a finished run; nothing to do (--overwrite trains afresh)")
            return 0

    # Data problems surface before anything is written (or, with --overwrite, deleted).
    source = load_training_source(config)
    train_data = data.make_dataset(
        source, batch_size=config.batch_size, shuffle=True, drop_remainder=True, seed=config.seed
    )
    steps_per_epoch = source.num_examples // config.batch_size
    knn_sets = load_knn_sets(config)
    run_dir.create(config.to_dict(), overwrite=overwrite)
    with strategy.scope():
        model = build_model(config, steps_per_epoch)
    # Every worker resumes from the chief's newest checkpoint (the workdir is on storage all
    # hosts see): after a crash between the chief's and a worker's write of the same epoch,
    # their own newest checkpoints stand an epoch apart, and workers must restart in step.
    checkpoint, epochs_done = chief_dir.latest_checkpoint()
    if checkpoint:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint)
        logging.info("resuming %s after epoch %d", run_dir.path, epochs_done)
    run_dir.keep_metrics_up_to(epochs_done)

    callbacks = [KLWeightSchedule(config.kl_start, config.kl_end, config.kl_decay_epochs)]
    if knn_sets:
        monitor = KNNMonitor(
            *knn_sets,
            every=config.knn_every,
            epochs=config.epochs,
            k=config.knn_k,
            temperature=config.knn_temperature,
        )
        monitor.set_model(model)
        if not epochs_done:
            untrained = monitor.measure()
            logging.info("kNN top-1 of the untrained backbone: %.2f%%", untrained)
            run_dir.append_metrics({"epoch": 0, "knn_top1": untrained})
        callbacks.append(monitor)
    nan_guard = StopOnNaN()
    collapse_guard = CollapseGuard(
        config.collapse_fraction, config.batch_size, patience=config.collapse_patience
    )
    callbacks += [
        collapse_guard,
        nan_guard,
        RunRecorder(run_dir),
        keras.callbacks.TensorBoard(run_dir.tensorboard_dir),
    ]
    logging.info(
        "pretraining on %d images of %s, %d steps per epoch, workdir %s",
        source.num_examples,
        source.description,
        steps_per_epoch,
        run_dir.path,
    )
    model.fit(
        train_data,
        epochs=config.epochs,
        initial_epoch=epochs_done,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on terminals, a line in logs
        shuffle=False,  # make_dataset reshuffles every epoch
    )
    if nan_guard.failed_at:
        epoch, batch = nan_guard.failed_at
        hint = "" if policy == "float32" else " or use --precision=float32"
        print(
            f"error: the loss became NaN at epoch {epoch}, batch {batch}; lower --learning_rate "
            f"(now {config.learning_rate}){hint} and rerun with --overwrite",
            file=sys.stderr,
        )
        return 1
    if collapse_guard.stopped_at:
        print(
            f"error: the assignment collapsed: fewer than {collapse_guard.threshold():g} "
            f"prototypes in use per batch for {collapse_guard.patience} epochs, up to epoch "
            f"{collapse_guard.stopped_at}; lower --learning_rate (now {config.learning_rate}) "
            f"or raise --kl_start/--kl_end (now {config.kl_start}/{config.kl_end}) and rerun "
            "with --overwrite",
            file=sys.stderr,
        )
        return 1
    export_run(model, run_dir.export_dir)
    if not is_chief(
        strategy
    ):  # its files duplicate the chief's; they were written for the collectives
        shutil.rmtree(run_dir.path, ignore_errors=True)
        return 0
    _report(run_dir)
    return 0


def _report(run_dir: RunDirectory) -> None:
    """Prints where the results are and the kNN figures before and after training."""
    knn = [(row["epoch"], row["knn_top1"]) for row in run_dir.read_metrics() if row["knn_top1"]]
    if len(knn) >= 2:
        print(f"kNN top-1: untrained {float(knn[0][1]):.2f}% -> trained {float(knn[-1][1]):.2f}%")
    print(f"exported backbone to {run_dir.backbone_export} and the model to {run_dir.model_export}")
    print(f"metrics in {run_dir.metrics_path}; TensorBoard: tensorboard --logdir {run_dir.path}")
