"""Peak memory of a run whose data is larger than its memory budget, kNN monitor on.

Writes `--files` photo-like JPEGs of about `--width` x `--height` into `--folder` (as
benchmarks/input_pipeline.py does; kept for the next run), then runs `carl_tf.pretrain` on it for
one epoch with a narrow ResNet-18 at `--image_size`: a training subset of `--train_subset`
images, the kNN monitor on the folder's 80/20 holdout split (bank and queries), measured before
training and after the epoch. With `--memory_budget_mb` below the folder's decoded size every
split is streamed, so the run's peak should not grow with `--files`; with a large budget the
splits are held in memory and the peak grows by their decoded size.

Prints one line per figure, then all of them as ONE JSON LINE, last.

    PYTHONPATH=. python benchmarks/bounded_memory.py --folder=/tmp/photos --files=4000
"""

import argparse
import json
import os
import resource
import tempfile
import time

from benchmarks.input_pipeline import make_folder
from carl_tf.configs.common import paper_recipe
from carl_tf.training.pretrain import pretrain


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="Where the JPEGs are (made if missing).")
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--memory_budget_mb", type=float, default=64.0)
    parser.add_argument("--train_subset", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    return parser.parse_args()


def run_config(args: argparse.Namespace):
    config = paper_recipe()
    config.dataset = f"folder:{args.folder}"
    config.holdout = 0.2
    config.image_size = args.image_size
    config.memory_budget_mb = args.memory_budget_mb
    config.train_subset = args.train_subset
    config.backbone_width = 4
    config.projection_hidden_dim = 64
    config.epochs = 1
    config.batch_size = args.batch_size
    config.knn_every = 1
    config.precision = "float32"
    return config


def main() -> None:
    args = parse_args()
    make_folder(args)
    decoded_mb = args.files * args.image_size**2 * 3 / (1 << 20)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        result = pretrain(run_config(args), os.path.join(workdir, "run"))
    figures = {
        "files": args.files,
        "image_size": args.image_size,
        "decoded_mb": round(decoded_mb, 1),
        "memory_budget_mb": args.memory_budget_mb,
        "streamed": decoded_mb > args.memory_budget_mb,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "knn_untrained": result.knn_untrained,
        "knn_final": result.knn_final,
        "seconds": round(time.perf_counter() - started, 1),
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
