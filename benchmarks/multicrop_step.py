"""Step time of multi-crop CARL: the CPU preset with 0 and with N small crops, in one process.

Both models are the `cifar10_cpu` preset's (ResNet-18 of width 16, batch 128, 32 px, under its
precision) as train.py builds them (`carl_tf.training.methods.build_model`), one with
`small_crops=0` and one with `--small_crops` small views of `small_crop_size` px (the preset's
default: half of 32). Each full `fit` step on synthetic raw images (views made on device) is
timed in alternating repeats, so a change in the load of a shared machine hits both alike.

Prints the seconds per step of both and their ratio as ONE JSON LINE, last.

Run: TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/multicrop_step.py --small_crops 4
"""

import argparse
import json
import statistics

from benchmarks.throughput import fit_seconds_per_step, synthetic_dataset
from carl_tf.configs import cifar10_cpu
from carl_tf.run.precision import set_precision
from carl_tf.training.methods import build_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small_crops", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--backbone_width", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (incl. tracing)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = cifar10_cpu.get_config()
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.backbone_width:
        config.backbone_width = args.backbone_width
    policy = set_precision(config.precision, strategy=config.strategy).name
    models = {}
    for small_crops in (0, args.small_crops):
        config.small_crops = small_crops
        models[small_crops] = build_model(config, steps_per_epoch=1000)
    data = argparse.Namespace(batch_size=config.batch_size, image_size=config.image_size)
    dataset = synthetic_dataset(data)
    for model in models.values():
        fit_seconds_per_step(model, dataset, args.warmup)  # traces
    seconds = {n: [] for n in models}
    for _ in range(args.repeats):
        for n, model in models.items():
            seconds[n].append(fit_seconds_per_step(model, dataset, args.steps))
    median = {n: statistics.median(s) for n, s in seconds.items()}
    figures = {
        "precision": policy,
        "batch_size": config.batch_size,
        "backbone_width": config.backbone_width,
        "image_size": config.image_size,
        "small_crops": args.small_crops,
        "small_crop_size": config.small_crop_size,
        "seconds_per_step_0": median[0],
        f"seconds_per_step_{args.small_crops}": median[args.small_crops],
        "ratio": median[args.small_crops] / median[0],
        "repeats": {str(n): s for n, s in seconds.items()},
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
