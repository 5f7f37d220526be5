"""One pretraining run from a config: `carl_tf.pretrain(config, workdir)`, of `config.method`
(CARL, or the SimCLR baseline: `carl_tf.training.methods`).

The run is built in parts that each do one thing: the runtime (seed, precision, strategy), the
data, the model, the run directory, the callbacks, the fit, and the export. Everything that can
be refused is built and checked before the run directory is created, changed or deleted.

It runs under Keras's TensorFlow and JAX backends; under JAX a source held in memory (digits,
npz, a folder of images no larger than the input) trains without TensorFlow installed, and
then the run has no TensorBoard logs and no SavedModel (each said in one logged line).
"""

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator

import keras
import ml_collections
import numpy as np

from carl_tf import data
from carl_tf.errors import TrainingFailed, UsageError
from carl_tf.evaluation.knn import DEFAULT_BLOCK_MB
from carl_tf.evaluation.monitor import KNNMonitor
from carl_tf.method.augment import CROP_RATIO
from carl_tf.method.base import TwoViewModel
from carl_tf.run import signals
from carl_tf.run.callbacks import (
    ADVICE_FIELDS,
    CollapseGuard,
    Interrupted,
    RaiseSignals,
    RunRecorder,
    StopOnNaN,
)
from carl_tf.run.choices import EXTEND_MODES
from carl_tf.run.config import validate_config
from carl_tf.run.export import export_run
from carl_tf.run.precision import set_precision
from carl_tf.run.progress import RESULT, EpochLog, RunTensorBoard, talking
from carl_tf.run.rundir import RunDirectory
from carl_tf.run.strategy import is_chief, make_strategy, worker_workdir
from carl_tf.training import views, worker_input
from carl_tf.training.methods import METHODS, build_model

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run left behind.

    Attributes:
        workdir: The run directory, absolute.
        trained: False when the run was already finished and nothing was done.
        epochs: Epochs the run holds.
        knn_untrained: kNN top-1 (%) of the untrained backbone, or None without the monitor.
        knn_final: kNN top-1 (%) after the last epoch, or None without the monitor.
        backbone_export: The exported backbone SavedModel; None where TensorFlow was not
            installed to write it.
        model_export: The exported `.keras` model (load it after `import carl_tf`).
        metrics: Path of metrics.csv.
    """

    workdir: str
    trained: bool
    epochs: int
    knn_untrained: float | None
    knn_final: float | None
    backbone_export: str | None
    model_export: str
    metrics: str


def pretrain(
    config,
    workdir: str,
    *,
    overwrite: bool = False,
    extend: str | None = None,
    verbose: str | int = "auto",
) -> PretrainResult:
    """Runs, resumes, extends or (with `overwrite`) restarts one pretraining run.

    Args:
        config: A ConfigDict with the fields of `carl_tf.configs.common.paper_recipe()`.
        workdir: The run directory; rerunning on it resumes after the last finished epoch.
        overwrite: Delete the run already in `workdir` (only once everything is checked).
        extend: For a `config` with more epochs than the run in `workdir` (finished or not):
            `rescale` or `restart`, what the learning-rate and lambda schedules do over the
            added epochs (see `carl_tf.run.choices.EXTEND_MODES`); recorded in config.json.
        verbose: As `model.fit`'s: "auto" (1 on a terminal, else 2), 0 (warnings only), 1
            (Keras's progress bar and a line per epoch) or 2 (a line per epoch). Unless the
            program configured `logging` itself, the lines go to stdout: the data, the untrained
            kNN, one line per epoch and where the export went.

    Returns:
        What the run left behind; also for a run that was already finished.

    Raises:
        UsageError: A setting, data source or run directory that cannot work (nothing written).
        RunDirectoryError: The workdir is in use by another train.py (see `RunDirectory.lock`),
            damaged, full or read-only.
        TrainingFailed: The loss became NaN or the assignment collapsed (nothing exported).
        Interrupted: Ctrl-C (or a SIGTERM raised as a KeyboardInterrupt) during the epochs,
            naming the epoch in progress; the checkpoints of the epochs before it are kept.
    """
    with talking(verbose) as progress_bar:
        result = _pretrain(config, workdir, overwrite, extend, progress_bar)
        log_result(result)
    return result


def log_result(result: PretrainResult) -> None:
    """The closing lines of a run: nothing to do, or the kNN gain and where the export went."""
    if not result.trained:
        logger.info(
            "%s holds a finished run; nothing to do (overwrite=True trains afresh)",
            result.workdir,
            extra=RESULT,
        )
        return
    if result.knn_untrained is not None and result.knn_final is not None:
        logger.info(
            "kNN top-1: untrained %.2f%% -> trained %.2f%%",
            result.knn_untrained,
            result.knn_final,
            extra=RESULT,
        )
    backbone = f"the backbone to {result.backbone_export} and " if result.backbone_export else ""
    logger.info(
        "exported %sthe model to %s; metrics in %s",
        backbone,
        result.model_export,
        result.metrics,
        extra=RESULT,
    )


def _pretrain(config, workdir, overwrite, extend, progress_bar: bool) -> PretrainResult:
    """`pretrain`'s run, showing Keras's progress bar when `progress_bar`."""
    validate_config(config)
    policy, strategy = setup_runtime(config)
    chief_dir = RunDirectory(workdir)
    run_dir = RunDirectory(worker_workdir(workdir, strategy))
    record = config.to_dict() if overwrite else run_dir.check_config(config.to_dict(), extend)
    extensions = record.pop("extensions", [])
    record.pop("resolved_precision", None)  # resolved again on this machine
    config = ml_collections.ConfigDict(record)  # an extension may keep the run's lambda decay
    if not overwrite:
        # The chief's export is the one finish line: a worker's own scratch directory is gone
        # after a finished run, and a worker that trained alone would wait for the chief forever.
        if chief_dir.is_finished(config.epochs):
            return _result(chief_dir, trained=False)
    if extensions:
        _log_extension(extensions[-1])

    whole_split = load_training_split(config)
    source = training_subset(config, whole_split)
    train_data = training_data(config, source, strategy)
    steps_per_epoch = worker_input.steps_per_epoch(
        source.num_examples, config.batch_size, worker_input.num_input_pipelines(strategy)
    )
    unused = source.num_examples - steps_per_epoch * config.batch_size
    if unused:
        logger.info(
            "each epoch trains on %d of the %d images (%d whole batches of %d); the other %d, "
            "drawn afresh every epoch, wait for a later one",
            steps_per_epoch * config.batch_size,
            source.num_examples,
            steps_per_epoch,
            config.batch_size,
            unused,
        )
    if config.method == "simclr":
        logger.info(
            "method simclr: NT-Xent at temperature %g in place of CARL's objective",
            config.simclr_temperature,
        )
    knn_sets = load_knn_sets(config, loaded={config.train_split: whole_split})
    with strategy.scope():
        model = build_model(config, steps_per_epoch, extensions)

    # Held from before the directory is created (or deleted by --overwrite) through the export,
    # so a second train.py on the same workdir is refused before it changes anything.
    with run_dir.lock():
        record = {**config.to_dict(), "resolved_precision": policy}
        run_dir.create(
            {**record, **({"extensions": extensions} if extensions else {})}, overwrite=overwrite
        )
        epochs_done = resume(model, chief_dir, run_dir)
        recorder = RunRecorder(run_dir, epochs_done)
        with naming_the_epoch(recorder):
            callbacks = make_callbacks(
                config, model, run_dir, knn_sets, recorder, progress_bar=progress_bar
            )
            logger.info(
                "pretraining on %d images of %s, %d steps per epoch, workdir %s",
                source.num_examples,
                source.description,
                steps_per_epoch,
                run_dir.path,
            )
            with signals.deferred():
                model.fit(
                    train_data,
                    epochs=config.epochs,
                    initial_epoch=epochs_done,
                    steps_per_epoch=steps_per_epoch,
                    callbacks=callbacks,
                    verbose=1 if progress_bar else 0,  # EpochLog prints the epoch lines
                    shuffle=False,  # make_dataset reshuffles every epoch
                )
        raise_on_failure(config, policy, callbacks)
        export_run(model, run_dir.export_dir)
        if not is_chief(strategy):  # its files duplicate the chief's; written for the collectives
            shutil.rmtree(run_dir.path, ignore_errors=True)
    if not is_chief(strategy):  # a worker's scratch directory is gone, and its lock with it
        with contextlib.suppress(OSError):
            os.remove(run_dir.lock_path)
    return _result(chief_dir, trained=True)


def _log_extension(extension: dict) -> None:
    logger.info(
        "extending the %d-epoch run to %d epochs: %s (extend=%s)",
        extension["from_epochs"],
        extension["to_epochs"],
        EXTEND_MODES[extension["schedules"]],
        extension["schedules"],
    )


def setup_runtime(config):
    """Seeds every generator, sets the Keras dtype policy and makes the strategy.

    Returns:
        The resolved policy's name and the strategy (`carl_tf.run.strategy.make_strategy`).
    """
    keras.utils.set_random_seed(config.seed)
    try:
        policy = set_precision(config.precision, strategy=config.strategy).name
        strategy = make_strategy(config.strategy)
    except UsageError:  # names its fields already (a strategy the backend cannot run)
        raise
    except ValueError as error:  # an unknown precision or strategy
        raise UsageError(str(error)) from error
    logger.info("precision %s: Keras dtype policy %s", config.precision, policy)
    return policy, strategy


def training_data(config, source: data.ImageSource, strategy):
    """The training batches, repeated, each worker reading only its share of the source.

    Views of images larger than `image_size` are cut from the full-resolution files in the
    pipeline, those of smaller ones on device (`carl_tf.training.views.training_batches`).
    `fit` then needs `steps_per_epoch`: an epoch is that many steps of the endless stream.
    """

    def build(batch_size: int, shard: tuple[int, int]):
        return views.training_batches(
            source,
            image_size=config.image_size,
            crop_scale=(config.crop_min_scale, 1.0),
            crop_ratio=CROP_RATIO,
            batch_size=batch_size,
            seed=config.seed,
            shard=shard,
        )

    return worker_input.per_worker_batches(strategy, config.batch_size, build)


def load_training_split(config) -> data.ImageSource:
    """The whole split the run pretrains on (`train_split`).

    A source held in memory (it fits `memory_budget_mb`) has its undecodable files reported
    and dropped at load; a streamed one skips them as they are read.
    """
    return _load(config, config.train_split, download=config.download)


def training_subset(config, source: data.ImageSource) -> data.ImageSource:
    """The pretraining images: `source` cut to a fixed seeded subset when `train_subset` asks.

    The subset is chosen by index, so a streamed source never decodes the images it drops.
    """
    if not config.train_subset or config.train_subset >= source.num_examples:
        return source
    return source.subset(_seeded_subset(source.num_examples, config.train_subset, config))


def _load(config, split: str, download: bool = False) -> data.ImageSource:
    return data.load_source(
        config.dataset,
        split=split,
        data_dir=config.data_dir or None,
        image_size=config.image_size,
        holdout=config.holdout,
        seed=config.split_seed,
        download=download,
        memory_budget_bytes=int(config.memory_budget_mb * (1 << 20)),
    )


def _seeded_subset(num_examples: int, size: int, config) -> np.ndarray:
    """Sorted indices of a subset of `size` examples, fixed by `split_seed`."""
    rng = np.random.default_rng(config.split_seed)
    return np.sort(rng.permutation(num_examples)[:size])


def load_knn_sets(config, loaded: dict[str, data.ImageSource] | None = None):
    """The kNN monitor's labelled (bank, queries), or None with the reason logged.

    `loaded` maps splits the run has already loaded (the training split, before
    `train_subset`) to their sources: their files are not read and decoded a second time, nor
    their damaged files reported twice. A source held in memory gives its arrays; a streamed
    one (larger than `memory_budget_mb`) a dataset the monitor reads batch by batch, holding
    only features.
    `knn_bank_size` cuts the bank to a fixed seeded subset.
    """
    if not config.knn_every:
        return None
    if data.splits_by_holdout(config.dataset) and not config.holdout:
        logger.info("kNN monitor skipped: it needs labelled images held out (holdout > 0)")
        return None
    sets = []
    for split in (config.knn_train_split, config.knn_test_split):
        source = loaded[split] if loaded and split in loaded else _load(config, split)
        if source.num_classes is None:
            logger.info("kNN monitor skipped: %s has no labels", source.description)
            return None
        if split == config.knn_train_split and 0 < config.knn_bank_size < source.num_examples:
            logger.info(
                "kNN bank: %d of the %d images of %s, fixed by split_seed %d (knn_bank_size)",
                config.knn_bank_size,
                source.num_examples,
                source.description,
                config.split_seed,
            )
            source = source.subset(
                _seeded_subset(source.num_examples, config.knn_bank_size, config)
            )
        sets.append(
            data.labelled_arrays(source) if source.arrays else data.labelled_batches(source)
        )
    return tuple(sets)


def resume(model: TwoViewModel, chief_dir: RunDirectory, run_dir: RunDirectory) -> int:
    """Restores the newest checkpoint into `model`; returns the epochs it holds (0: none).

    Every worker resumes from the chief's newest checkpoint (the workdir is on storage all
    hosts see): after a crash between the chief's and a worker's write of the same epoch,
    their own newest checkpoints stand an epoch apart, and workers must restart in step.
    A damaged newest checkpoint is skipped for the one before it; metrics.csv is checked and
    cut to the epochs resumed from before any weights are loaded.

    Only weights and optimizer state (momentum, step count, hence the learning rate) come back.
    The random streams restart from the seed as in a fresh run: the augmenter's
    `keras.random.SeedGenerator` (its state is not in the checkpoint) and the tf.data shuffle
    draw for the first epoch after a resume what they drew for epoch 1. So the epochs after a
    resume differ from an uninterrupted run's; those before it are bit-identical (see
    docs/faults.md, "What a resume does not restore").

    Raises:
        RunDirectoryError: If every checkpoint is damaged, or metrics.csv is damaged or gone.
    """
    checkpoint, epochs_done = chief_dir.latest_checkpoint()
    run_dir.keep_metrics_up_to(epochs_done)
    if checkpoint:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint)
        logger.info("resuming %s after epoch %d from %s", run_dir.path, epochs_done, checkpoint)
    return epochs_done


@contextlib.contextmanager
def naming_the_epoch(recorder: RunRecorder) -> Iterator[None]:
    """Turns a KeyboardInterrupt inside into `Interrupted` with the recorder's epoch in progress.

    Ctrl-C reaches Python wherever `fit` happens to be; only the recorder knows which epoch
    that was, and the user needs it to know what the rerun will redo.
    """
    try:
        yield
    except KeyboardInterrupt as error:
        raise Interrupted(recorder.epoch_in_progress) from error


def make_callbacks(
    config,
    model: TwoViewModel,
    run_dir: RunDirectory,
    knn_sets,
    recorder: RunRecorder,
    progress_bar: bool = False,
):
    """The run's callbacks: the method's own (`carl_tf.training.methods`), then every run's.

    Measures and records the untrained backbone's kNN (epoch 0) on a fresh run (one that
    `recorder` starts at epoch 1). Order matters: the monitor adds its figure before the
    records and the epoch line read the logs.
    """
    epochs_done = recorder.epoch_in_progress - 1
    callbacks = METHODS[config.method].callbacks(config)
    board = RunTensorBoard(run_dir.tensorboard_dir)
    board.set_model(model)
    if knn_sets:
        monitor = KNNMonitor(
            *knn_sets,
            every=config.knn_every,
            epochs=config.epochs,
            k=config.knn_k,
            temperature=config.knn_temperature,
            # The vote's similarity blocks stay within the run's memory budget (and its default
            # block size below a large budget), whatever the bank's size.
            memory_budget_mb=min(config.memory_budget_mb, DEFAULT_BLOCK_MB),
        )
        monitor.set_model(model)
        if not epochs_done:
            untrained = monitor.measure()
            logger.info("kNN top-1 of the untrained backbone: %.2f%%", untrained)
            run_dir.append_metrics({"epoch": 0, "knn_top1": untrained})
            board.write_untrained(untrained)
        callbacks.append(monitor)
    nan_guard = StopOnNaN()
    callbacks += [nan_guard, recorder, board]
    if progress_bar:  # Keras's bar, finished before the epoch line below is printed
        callbacks.append(keras.callbacks.ProgbarLogger())
    callbacks += [EpochLog(config.epochs), RaiseSignals()]
    return callbacks


def raise_on_failure(config, policy: str, callbacks) -> None:
    """Raises TrainingFailed when a guard among `callbacks` (`StopOnNaN`, `CollapseGuard`)
    stopped the fit, naming the settings to change."""
    for guard in callbacks:
        if isinstance(guard, StopOnNaN) and guard.failed_at:
            epoch, batch = guard.failed_at
            hint = "" if policy == "float32" else " or set precision to float32"
            raise TrainingFailed(
                f"the loss became NaN at epoch {epoch}, batch {batch}",
                f"lower learning_rate (now {config.learning_rate}){hint} and rerun with overwrite",
                fields=("learning_rate", "precision", "overwrite"),
            )
        if isinstance(guard, CollapseGuard) and guard.stopped_at:
            raise TrainingFailed(
                f"the assignment collapsed: fewer than {guard.threshold():g} prototypes in use "
                f"per batch for {guard.patience} epochs, up to epoch {guard.stopped_at}",
                f"{guard.advice}, and rerun with overwrite",
                fields=(*ADVICE_FIELDS, "overwrite"),
            )


def _result(run_dir: RunDirectory, trained: bool) -> PretrainResult:
    knn = {int(r["epoch"]): float(r["knn_top1"]) for r in run_dir.read_metrics() if r["knn_top1"]}
    rows = run_dir.read_metrics()
    last = max((int(row["epoch"]) for row in rows), default=0)
    return PretrainResult(
        workdir=run_dir.path,
        trained=trained,
        epochs=last,
        knn_untrained=knn.get(0),
        knn_final=knn.get(last) if last else None,
        backbone_export=(
            run_dir.backbone_export if os.path.isdir(run_dir.backbone_export) else None
        ),
        model_export=run_dir.model_export,
        metrics=run_dir.metrics_path,
    )
