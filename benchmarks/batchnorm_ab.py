"""The full training step with the fused BatchNorm against Keras's own, timed in alternation.

Builds the benchmark's CARL (benchmarks/throughput.py: ResNet-18 width 16, batch 256, the
paper's head) twice in one process: once as the library builds it
(`carl_tf.method.normalization.FusedBatchNormalization`) and once with `keras.layers.BatchNormalization`
in its place (the class `carl_tf.method.backbones` instantiates is swapped for the second build). The two
take turns, `--repeats` rounds of `--steps` steps, so load from other jobs hits both alike.
Prints the figures as ONE JSON LINE.

Run:
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/batchnorm_ab.py --steps 4 --repeats 5
"""

import argparse
import json
import statistics

import keras

from benchmarks.throughput import (
    add_model_args,
    add_timing_args,
    build_model,
    fit_seconds_per_step,
    synthetic_dataset,
)
from carl_tf.method.normalization import FusedBatchNormalization, batch_norm
from carl_tf.run.precision import set_precision


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, precision="auto")
    add_timing_args(parser)
    return parser.parse_args()


def build_with_keras_batchnorm(args):
    """The same model with Keras's BatchNormalization in the backbone (the norm-layer factory)."""
    return build_model(args, norm_layer=batch_norm(fused=False))


def fused_layers(model) -> int:
    """How many of the backbone's BatchNorm layers run the fused kernel."""
    return sum(isinstance(layer, FusedBatchNormalization) for layer in model.backbone.layers)


def main() -> None:
    args = parse_args()
    args.precision = set_precision(args.precision).name
    keras.utils.set_random_seed(0)
    models = {"fused": build_model(args), "keras": build_with_keras_batchnorm(args)}
    dataset = synthetic_dataset(args)
    for model in models.values():
        fit_seconds_per_step(model, dataset, args.warmup)  # traces
    seconds = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            seconds[name].append(fit_seconds_per_step(model, dataset, args.steps))
    speedups = [k / f for f, k in zip(seconds["fused"], seconds["keras"])]
    figures = {
        "precision": args.precision,
        "batch_size": args.batch_size,
        "fused_pairs_per_s": args.batch_size / statistics.median(seconds["fused"]),
        "keras_pairs_per_s": args.batch_size / statistics.median(seconds["keras"]),
        "speedup": statistics.median(speedups),
        "speedup_range": [min(speedups), max(speedups)],
        # What each model really runs: the factory reached every layer.
        "fused_layers": {name: fused_layers(model) for name, model in models.items()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
