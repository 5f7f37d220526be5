"""`carl-embed --model=runs/digits --images=DIR --output=embeddings.csv`: features of a folder.

One row per image file under `--images` (sub-folders included): its name, the prototype the
model assigns it to and that prototype's probability (for a model with an assigner), and its
features. `.csv` is written a batch at a time; `.npz` holds `files`, `features`, `prototypes`
and `probabilities` arrays. A file that cannot be decoded is named in one line and left out.
The work is `carl_tf.embed_images`; this module maps flags to it.

    carl-embed --model=runs/digits --images=photos --output=embeddings.npz
"""

from absl import app, flags

from carl_tf.cli.common import load_keras, parse_flags, run_main
from carl_tf.errors import UsageError
from carl_tf.evaluation.embed import check_paths, embed_images

_MODEL = flags.DEFINE_string(
    "model",
    None,
    "A train.py workdir (its export/carl.keras, else its newest checkpoint), an exported "
    "backbone SavedModel directory, or a .keras file.",
)
_IMAGES = flags.DEFINE_string(
    "images", None, "Folder of JPEG, PNG, BMP or GIF files, sub-folders included."
)
_OUTPUT = flags.DEFINE_string("output", None, "The .csv or .npz file to write.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Files decoded and embedded at a time.")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    for flag in (_MODEL, _IMAGES, _OUTPUT):
        if flag.value is None:
            raise UsageError(f"pass --{flag.name}; see carl-embed --help")
    if _BATCH_SIZE.value < 1:
        raise UsageError(
            f"batch_size must be at least 1, got {_BATCH_SIZE.value}; fix --batch_size"
        )
    check_paths(_IMAGES.value, _OUTPUT.value)  # before TensorFlow loads
    load_keras()
    result = embed_images(_MODEL.value, _IMAGES.value, _OUTPUT.value, batch_size=_BATCH_SIZE.value)
    prototypes = f", prototypes of K = {result.num_prototypes}" if result.num_prototypes else ""
    skipped = f"; skipped {len(result.skipped)} unreadable" if result.skipped else ""
    print(
        f"wrote {result.num_images} embeddings ({result.dimension} features{prototypes}) to "
        f"{result.output}{skipped}"
    )
    return 0


def run() -> None:
    """The console script's entry point."""
    app.run(
        run_main(main, lambda field: f"--{field}"),
        flags_parser=lambda argv: parse_flags(argv, help_module=__name__),
    )
