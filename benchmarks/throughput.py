"""Training throughput of CARL on this machine: full step, bare step and input pipeline.

Measures, for one backbone / precision / XLA setting:

- the full step: `CARL.fit` on synthetic uint8 images, both views made on device by
  `SimCLRAugment`, all metric trackers on (what train.py runs);
- the bare step: the same backbone, head, assigner, loss and optimizer on two premade views, in a
  minimal `tf.function` with a GradientTape (no augmentation, trackers or Keras loop), so
  full / bare is the cost of everything around the model;
- the input pipeline: `carl_tf.data` reading `folder:PATH` (decoded into memory as train.py does,
  and streamed from disk when it does not fit), in images (= pairs) per second;
- with `--compare`, the full step under float32 and mixed_bfloat16, each with and without XLA,
  taking turns in one process (on a shared machine, separate runs see different loads).

FLOPs come from `tf.compat.v1.profiler` (float_operation) on the bare step's graph: forward and
backward of both views plus the update, counting the ops TensorFlow registers FLOPs for
(convolutions and their gradients, matmuls, elementwise arithmetic), not the view making.

Prints one line per figure, then all of them as ONE JSON LINE, last.

Run (with the CIFAR-10 training JPEGs unpacked as /tmp/cifar10/train/<class>/*.jpg):
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/throughput.py \
        --backbone_width 16 --folder /tmp/cifar10/train --compare
"""

import argparse
import json
import resource
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from carl_tf import CARL, data
from carl_tf.method import losses
from carl_tf.method.backbones import build_backbone
from carl_tf.run.precision import PRECISIONS, set_precision

# The paper's head and K for CIFAR (configs/common.py); SGD as train.py builds it.
PROJECTION_HIDDEN_UNITS = (2048, 2048)
PROJECTION_DIM = 128
NUM_PROTOTYPES = 100
WEIGHT_DECAY = 5e-4


def add_model_args(parser: argparse.ArgumentParser, precision: str) -> None:
    """The flags that choose the model and step to measure (shared with profile_step.py)."""
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--backbone_width", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--precision", default=precision, choices=PRECISIONS)
    parser.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=False)


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """How long to time each setting (shared with batchnorm_ab.py)."""
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; median reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (incl. tracing)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, precision="float32")
    add_timing_args(parser)
    parser.add_argument("--folder", default=None, help="JPEG tree for the input pipeline")
    parser.add_argument("--input_batches", type=int, default=50)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time the full step under float32 and mixed_bfloat16, each with and without "
        "XLA, in alternation in this process (fair on a shared machine)",
    )
    return parser.parse_args()


def build_model(args: argparse.Namespace, jit_compile: bool | None = None, norm_layer=None) -> CARL:
    """The benchmark's CARL, under the dtype policy in effect; XLA as `--jit_compile` by default.

    `norm_layer` replaces the backbone's BatchNorm factory (see `batch_norm`).
    """
    backbone = build_backbone(
        args.backbone,
        width=args.backbone_width,
        image_size=args.image_size,
        norm_layer=norm_layer,
    )
    model = CARL(
        backbone,
        num_prototypes=NUM_PROTOTYPES,
        projection_hidden_units=PROJECTION_HIDDEN_UNITS,
        projection_dim=PROJECTION_DIM,
    )
    optimizer = keras.optimizers.SGD(
        0.03 * args.batch_size / 256, momentum=0.9, weight_decay=WEIGHT_DECAY
    )
    jit_compile = args.jit_compile if jit_compile is None else jit_compile
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def synthetic_images(args: argparse.Namespace, seed: int = 0) -> np.ndarray:
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def synthetic_dataset(args: argparse.Namespace) -> tf.data.Dataset:
    """One batch of raw images, repeated: the full step's input then costs nothing."""
    return tf.data.Dataset.from_tensors(synthetic_images(args)).repeat()


class _EpochTimer(keras.callbacks.Callback):
    """Wall time of an epoch; Keras reads the metrics at epoch end, which waits for the steps."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit_seconds_per_step(model: CARL, dataset: tf.data.Dataset, steps: int) -> float:
    """Seconds per step of one `fit` epoch of `steps` steps, `fit`'s set-up excluded."""
    timer = _EpochTimer()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
    return timer.seconds / steps


def bare_step_function(model: CARL):
    """One CARL update on premade views with nothing else: the floor `fit` is compared with."""
    optimizer = model.optimizer
    variables = model.trainable_variables
    kl_weight = float(model.kl_weight)

    def step(view_a, view_b):
        with tf.GradientTape() as tape:
            p_a = model.assign(view_a, training=True)
            p_b = tf.stop_gradient(model.assign(view_b, training=True))
            consistency = losses.consistency_loss(p_a, p_b)
            loss = losses.carl_loss(consistency, losses.kl_to_uniform(p_a), kl_weight)
            scaled = optimizer.scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    return step


def step_seconds(full: CARL, bare: CARL, views, args: argparse.Namespace) -> tuple[list, list]:
    """Seconds per step of the full and the bare step, in alternating repeats.

    The two alternate so that a change in the load of a shared machine hits both alike.
    """
    dataset = synthetic_dataset(args)
    bare_step = tf.function(bare_step_function(bare), jit_compile=args.jit_compile)
    fit_seconds_per_step(full, dataset, args.warmup)  # traces
    for _ in range(args.warmup):
        bare_step(*views).numpy()
    full_seconds, bare_seconds = [], []
    for _ in range(args.repeats):
        full_seconds.append(fit_seconds_per_step(full, dataset, args.steps))
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = bare_step(*views)
        loss.numpy()  # waits for the last step
        bare_seconds.append((time.perf_counter() - start) / args.steps)
    return full_seconds, bare_seconds


def compare_settings(args: argparse.Namespace) -> dict[str, float]:
    """Full-step pairs/s of float32 and mixed_bfloat16, each with and without XLA.

    All four models live in this process and take turns, one timed epoch of `--steps` each per
    round, so load from other jobs falls on all of them alike.
    """
    models = {}
    for precision in ("float32", "mixed_bfloat16"):
        set_precision(precision)
        for jit_compile in (False, True):
            models[precision + (" + XLA" if jit_compile else "")] = build_model(args, jit_compile)
    set_precision(args.precision)
    dataset = synthetic_dataset(args)
    seconds = {name: [] for name in models}
    for model in models.values():
        fit_seconds_per_step(model, dataset, args.warmup)  # traces
    for _ in range(args.repeats):
        for name, model in models.items():
            seconds[name].append(fit_seconds_per_step(model, dataset, args.steps))
    return {name: args.batch_size / statistics.median(s) for name, s in seconds.items()}


def flops_per_step(model: CARL, views) -> float:
    """Float operations of one bare step (both views forward, the anchor back), by the profiler."""
    graph = tf.function(bare_step_function(model)).get_concrete_function(*views).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def input_pairs_per_s(source: data.ImageSource, args: argparse.Namespace) -> float:
    """Batches of `make_dataset` as train.py reads them (shuffled, repeated), in images/s."""
    dataset = data.make_dataset(
        source, batch_size=args.batch_size, shuffle=True, drop_remainder=True, repeat=True
    )
    return args.batch_size * batches_per_s(iter(dataset), args.input_batches)


def batches_per_s(iterator, batches: int) -> float:
    """Batches per second an endless dataset iterator yields, after three to warm it up."""
    for _ in range(3):  # fills the shuffle buffer and the prefetch
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    args.precision = set_precision(args.precision).name  # auto -> the policy it stands for
    figures = {key: getattr(args, key) for key in ("backbone", "backbone_width", "batch_size")}
    figures.update(
        image_size=args.image_size,
        precision=args.precision,
        jit_compile=args.jit_compile,
        steps=args.steps * args.repeats,
    )

    keras.utils.set_random_seed(0)
    full, bare = build_model(args), build_model(args)
    images = synthetic_images(args, seed=1)
    views = tuple(bare.augmenter(images, training=True) for _ in range(2))
    full_seconds, bare_seconds = step_seconds(full, bare, views, args)
    figures["pairs_per_s"] = args.batch_size / statistics.median(full_seconds)
    figures["bare_pairs_per_s"] = args.batch_size / statistics.median(bare_seconds)
    # Median of the paired ratios: each pair ran back to back, under the same load.
    ratios = [b / f for f, b in zip(full_seconds, bare_seconds)]
    figures["full_over_bare"] = statistics.median(ratios)
    figures["full_over_bare_range"] = [min(ratios), max(ratios)]
    print(f"full step (fit, views on device): {figures['pairs_per_s']:9.1f} pairs/s")
    print(f"bare step (premade views):        {figures['bare_pairs_per_s']:9.1f} pairs/s")
    print(
        f"full / bare:                      {figures['full_over_bare']:9.3f} "
        f"(repeats {min(ratios):.3f}-{max(ratios):.3f})"
    )

    flops = flops_per_step(bare, views)
    figures["gflops_per_step"] = flops / 1e9
    figures["gflops_per_s"] = flops / 1e9 * figures["pairs_per_s"] / args.batch_size
    figures["flops_source"] = "tf.compat.v1.profiler float_operation, bare step graph"
    print(f"model FLOPs at the full step rate: {figures['gflops_per_s']:8.1f} GFLOP/s")

    # Linux reports ru_maxrss in KiB.
    figures["train_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.compare:
        figures["compare_pairs_per_s"] = compare_settings(args)
        for name, rate in figures["compare_pairs_per_s"].items():
            print(f"full step, {name:22s}    {rate:9.1f} pairs/s")
    if args.folder:
        spec = f"folder:{args.folder}"
        start = time.perf_counter()
        in_memory = data.load_source(spec, image_size=args.image_size)
        figures["input_load_s"] = time.perf_counter() - start
        figures["input_pairs_per_s"] = input_pairs_per_s(in_memory, args)
        figures["input_headroom"] = figures["input_pairs_per_s"] / figures["pairs_per_s"]
        del in_memory
        streamed = data.load_source(spec, image_size=args.image_size, memory_budget_bytes=0)
        figures["input_stream_pairs_per_s"] = input_pairs_per_s(streamed, args)
        figures["input_stream_headroom"] = (
            figures["input_stream_pairs_per_s"] / figures["pairs_per_s"]
        )
        print(
            f"input, decoded in memory:         {figures['input_pairs_per_s']:9.1f} pairs/s "
            f"({figures['input_headroom']:.1f}x the full step; decoding took "
            f"{figures['input_load_s']:.0f} s)"
        )
        print(
            f"input, streamed from JPEG:        {figures['input_stream_pairs_per_s']:9.1f} "
            f"pairs/s ({figures['input_stream_headroom']:.1f}x)"
        )

    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
