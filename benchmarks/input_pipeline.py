"""Input throughput at ImageNet shapes: a generated folder of photo-sized JPEGs, streamed.

Writes `--files` JPEGs of about `--width` x `--height` pixels (smooth random scenes, so they
compress like photos, ~20-40 KB at 400x350) into `--folder` (kept for the next run), then reads
them the two ways train.py can, alternately, `--repeats` times each:

* `resized`: every file decoded and resized to `--image_size`, shuffled and batched by
  `make_dataset`; the two views are cropped from that on device (small images);
* `full_resolution`: two random resized crops per file cut from the full-resolution image
  (`carl_tf.training.views.crop_pairs`, only the windows' rectangle of a JPEG decoded), each
  resized once to `--image_size`: what train.py reads for images larger than `--image_size`.

Reports images (= pairs of views) per second of each, in total and per core the process may
use (median of the repeats), their ratio, and the peak resident memory of the process. One GPU
step of ResNet-50 at 224 px consumes `--batch_size` images; docs/benchmarks.md turns these
figures into cores per GPU. The shuffle buffers hold at most `--memory_budget_mb`.

Prints one line per figure, then all of them as ONE JSON LINE, last.

    PYTHONPATH=. python benchmarks/input_pipeline.py --folder=/tmp/photos --files=20000
"""

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
from PIL import Image

from benchmarks.throughput import batches_per_s
from carl_tf import data
from carl_tf.training.views import crop_pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="Where the JPEGs are (made if missing).")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--input_batches", type=int, default=20, help="Batches timed.")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="Timings of each path.")
    parser.add_argument("--memory_budget_mb", type=float, default=1024.0)
    return parser.parse_args()


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random scene: upsampled coarse noise plus fine grain, sized about as asked."""
    w = int(width * rng.uniform(0.85, 1.15))
    h = int(height * rng.uniform(0.85, 1.15))
    coarse = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    grain = rng.integers(-12, 13, scene.shape, dtype=np.int16)
    return Image.fromarray(np.clip(scene + grain, 0, 255).astype(np.uint8))


def make_folder(args: argparse.Namespace) -> None:
    """Writes the JPEGs into class sub-folders, unless the folder already holds enough."""
    existing = sum(len(files) for _, _, files in os.walk(args.folder))
    if existing >= args.files:
        return
    rng = np.random.default_rng(0)
    for i in range(args.files):
        directory = os.path.join(args.folder, f"class_{i % args.classes:03d}")
        os.makedirs(directory, exist_ok=True)
        photo(rng, args.width, args.height).save(
            os.path.join(directory, f"{i:06d}.jpg"), quality=90
        )


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    make_folder(args)
    written = time.perf_counter() - started
    # Streamed whatever its size, as a real ImageNet folder would be.
    source = data.load_source(
        f"folder:{args.folder}",
        image_size=args.image_size,
        memory_budget_bytes=int(args.memory_budget_mb * (1 << 20)),
        hold_in_memory=False,
    )
    resized = data.make_dataset(
        source, batch_size=args.batch_size, shuffle=True, drop_remainder=True, repeat=True
    )
    crops = crop_pairs(
        source,
        image_size=args.image_size,
        crop_scale=(0.08, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        batch_size=args.batch_size,
        shuffle=True,
        drop_remainder=True,
        seed=0,
    ).repeat()
    rates = {"resized": [], "full_resolution": []}
    iterators = {"resized": iter(resized), "full_resolution": iter(crops)}
    for _ in range(args.repeats):  # alternately, so both share the machine's state alike
        for path, iterator in iterators.items():
            rates[path].append(args.batch_size * batches_per_s(iterator, args.input_batches))
    resized_per_s, crops_per_s = (statistics.median(rates[p]) for p in rates)
    cores = len(os.sched_getaffinity(0))
    megabytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(args.folder) for f in files
    ) / (1 << 20)
    figures = {
        "files": source.num_examples,
        "folder_mb": round(megabytes, 1),
        "streamed": source.arrays is None,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "cores": cores,
        "images_per_s": round(resized_per_s, 1),
        "images_per_s_per_core": round(resized_per_s / cores, 1),
        "full_resolution_images_per_s": round(crops_per_s, 1),
        "full_resolution_images_per_s_per_core": round(crops_per_s / cores, 1),
        "full_resolution_to_resized": round(crops_per_s / resized_per_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds_to_write_folder": round(written, 1),
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
