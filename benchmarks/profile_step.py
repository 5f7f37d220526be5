"""Where the CARL training step's time goes, by TensorFlow's profiler.

Traces `--steps` steps of `CARL.fit` (the full step of benchmarks/throughput.py: views made on
device, all metrics) with `tf.profiler.experimental`, then sums the CPU time of every TensorFlow
op in the trace by part of the step (view making, forward, backward, optimizer update) and by
kind of op (convolutions, their gradients, matmuls, BatchNorm layers, the rest). Op times are summed
over the threads that ran them, so on N busy cores they add up to about N times the wall time:
read the shares, not the milliseconds. XLA-compiled code (the view maker's fused kernels) shows
up as its own "xla" kind.

Prints both tables, then the figures as ONE JSON LINE, last. The trace stays in `--logdir` for
TensorBoard's profile plugin (pip install tensorboard-plugin-profile).

Run:
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/profile_step.py --precision auto
"""

import argparse
import collections
import glob
import json
import os
import tempfile

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks.throughput import (
    add_model_args,
    build_model,
    fit_seconds_per_step,
    synthetic_dataset,
)
from carl_tf.run.precision import set_precision

# (kind, op types) in order of precedence, oneDNN's `_MklNative`/`_Fused` variants included.
OP_KINDS = (
    ("convolution gradients", ("Conv2DBackpropFilter", "Conv2DBackpropInput")),
    ("convolution", ("Conv2D",)),
    ("matmul", ("MatMul",)),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, precision="auto")
    parser.add_argument("--steps", type=int, default=5, help="traced steps")
    parser.add_argument("--warmup", type=int, default=3, help="untraced steps (incl. tracing)")
    parser.add_argument("--logdir", default=None, help="where the trace goes; default a temp dir")
    return parser.parse_args()


def op_kind(scope: str, op_type: str) -> str:
    """The kind of an op: by its type, else "batch norm" inside a BatchNorm layer ("*_bn*":
    the fused kernel, or the dozen plain ops of Keras's own BatchNorm), else "other"."""
    for kind, markers in OP_KINDS:
        if any(marker in op_type for marker in markers):
            return kind
    return "batch norm" if "_bn" in scope else "other"


def step_part(op_name: str) -> str:
    """The part of the train step an op belongs to, from its name scope."""
    scopes = op_name.lower()
    if "sim_clr_augment" in scopes:
        return "view making"
    if "gradient_tape" in scopes:
        return "backward"
    if "/sgd/" in scopes or "optimizer" in scopes:
        return "optimizer update"
    return "forward and loss"


def op_seconds(space: xplane_pb2.XSpace) -> dict[tuple[str, str], float]:
    """CPU seconds per (part, kind) of every op the host's compute threads ran.

    TensorFlow op events are named `scope/name:Type`; XLA's compiled kernels carry no type
    and count as kind "xla" in part "view making" (the only XLA code of a non-jit step).
    """
    totals = collections.defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                seconds = event.duration_ps * 1e-12
                if "::" in name:  # the executor's and thread pool's own bookkeeping spans
                    continue
                if ":" in name:
                    scope, _, op_type = name.rpartition(":")
                    totals[(step_part(scope), op_kind(scope, op_type))] += seconds
                else:
                    totals[("view making", "xla")] += seconds
    return dict(totals)


def trace(model, dataset, steps: int, logdir: str) -> xplane_pb2.XSpace:
    """Profiles `steps` steps of `model.fit` and returns the trace."""
    tf.profiler.experimental.start(logdir)
    try:
        fit_seconds_per_step(model, dataset, steps)
    finally:
        tf.profiler.experimental.stop()
    traces = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    path = max(traces, key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    return space


def shares(totals: dict[tuple[str, str], float], index: int) -> dict[str, float]:
    """Fractions of all op time by part (index 0) or by kind (index 1), largest first."""
    grouped = collections.Counter()
    for key, seconds in totals.items():
        grouped[key[index]] += seconds
    overall = sum(grouped.values())
    return {name: seconds / overall for name, seconds in grouped.most_common()}


def main() -> None:
    args = parse_args()
    args.precision = set_precision(args.precision).name
    keras.utils.set_random_seed(0)
    model = build_model(args)
    dataset = synthetic_dataset(args)
    fit_seconds_per_step(model, dataset, args.warmup)  # traces the step outside the profile
    logdir = args.logdir or tempfile.mkdtemp(prefix="carl_profile_")
    totals = op_seconds(trace(model, dataset, args.steps, logdir))
    by_part, by_kind = shares(totals, 0), shares(totals, 1)
    print(f"op time of {args.steps} steps ({args.precision}), trace in {logdir}")
    for title, table in (("part of the step", by_part), ("kind of op", by_kind)):
        print(f"  by {title}:")
        for name, share in table.items():
            print(f"    {name:24s} {100 * share:5.1f}%")
    figures = {
        "backbone": args.backbone,
        "backbone_width": args.backbone_width,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "steps": args.steps,
        "op_seconds": sum(totals.values()),
        "share_by_part": by_part,
        "share_by_kind": by_kind,
        "logdir": logdir,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
