"""evaluate.py's results as text: the side-by-side table on stdout and the JSON record."""

import json
import os

from carl_tf.errors import RunDirectoryError
from carl_tf.evaluation.protocols import SMALL_K, ProtocolSettings
from carl_tf.run.rundir import round_figure, write_atomically

# Figures in table order; those ending in _top1, _top5 or _acc are percentages.
FIGURES = (
    "knn_top1",
    "knn20_top1",
    "linear_top1",
    "linear_top5",
    "nmi",
    "ari",
    "cluster_acc",
    "kmeans_nmi",
    "kmeans_ari",
    "kmeans_acc",
)


class UnsavedResults(RunDirectoryError):
    """Figures that were measured but could not be saved (a read-only or full disk).

    The command-line programs print `results_text` on stdout before the one-line error, so an
    evaluation that took minutes is not lost with its file.

    Attributes:
        result: The evaluation, complete but for the files not written.
        results_text: The figures as the programs print them: the table and its notes.
    """

    def __init__(self, problem: str, fix: str, fields: tuple[str, ...], result, results_text: str):
        super().__init__(problem, fix, fields=fields)
        self.result = result
        self.results_text = results_text


def figure_labels(
    settings: ProtocolSettings, num_prototypes: int | None, num_classes: int
) -> dict[str, str]:
    """Row label of every figure, naming the settings that produced it."""
    t = f"T={settings.knn_temperature:g}"
    epochs = f"{settings.linear}, {settings.linear_epochs} epochs"
    k = f"K={num_prototypes}" if num_prototypes else "no assigner"
    return {
        "knn_top1": f"kNN top-1 % (k={settings.knn_k}, {t})",
        "knn20_top1": f"kNN top-1 % (k={SMALL_K}, {t})",
        "linear_top1": f"linear top-1 % ({epochs})",
        "linear_top5": f"linear top-5 % ({epochs})",
        "nmi": f"prototype NMI ({k})",
        "ari": f"prototype ARI ({k})",
        "cluster_acc": f"prototype cluster acc % ({k})",
        "kmeans_nmi": f"k-means NMI (K={num_classes})",
        "kmeans_ari": f"k-means ARI (K={num_classes})",
        "kmeans_acc": f"k-means cluster acc % (K={num_classes})",
    }


def format_table(columns: dict[str, dict[str, float | None]], labels: dict[str, str]) -> str:
    """A plain-text table: one row per figure present, one column per model.

    Args:
        columns: Column title -> figures (as `Evaluation.figures`); a figure that is None
            prints as n/a.
        labels: Row label of every figure (`figure_labels`).

    Returns:
        The table, lines joined by newlines, without a trailing newline.
    """
    present = [name for name in FIGURES if any(name in f for f in columns.values())]
    label_width = max(len(labels[name]) for name in present)
    widths = [max(len(title), 8) for title in columns]
    header = " " * label_width + "".join(f"  {t:>{w}}" for t, w in zip(columns, widths))
    lines = [header, "-" * len(header)]
    for name in present:
        cells = [_format(name, f.get(name)) for f in columns.values()]
        lines.append(
            f"{labels[name]:<{label_width}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths))
        )
    return "\n".join(lines)


def write_json(path: str, record: dict) -> None:
    """Writes `record` to `path` as indented JSON, atomically, creating its directory.

    Raises:
        RunDirectoryError: If the disk refuses the write, naming `output` as the way out.
    """
    path = os.path.abspath(path)
    fix = "pass output=PATH to write it elsewhere"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(
            f"cannot write to {path}: {error.strerror or error}", fix, fields=("output",)
        ) from error
    text = json.dumps(_rounded(record), indent=2) + "\n"
    write_atomically(path, text, elsewhere=(fix, "output"))


def _rounded(value):
    """`value` with every float in it through `round_figure`: 51.98, not 51.980000000000004."""
    if isinstance(value, float):
        return round_figure(value)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    is_percent = name.endswith(("_top1", "_top5", "_acc"))
    return f"{value:.2f}" if is_percent else f"{value:.3f}"
