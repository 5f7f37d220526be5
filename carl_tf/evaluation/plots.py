"""Pictures of a run: training curves from metrics.csv and how the classes spread over prototypes.

Drawn with matplotlib's Agg canvas directly (no pyplot), so no display or global state is used.
"""

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from carl_tf.evaluation.clustering import chance_cluster_accuracy

_DPI = 150
# metrics.csv column -> panel title; the kNN panel is drawn separately, twice as wide.
_CURVES = {
    "loss": "loss (eq. 7)",
    "consistency": "consistency (eq. 4)",
    "kl": "KL(mean assignment || uniform) (eq. 6)",
    "kl_weight": "KL weight $\\lambda_e$ (eq. 8)",
    "learning_rate": "learning rate",
    "prototypes_in_use": "prototypes in use per batch",
}
# Up to this many classes every class is named on the heatmap's axes; beyond it every tenth.
_NAMED_CLASSES = 20


def plot_training_curves(
    rows: list[dict[str, str]], path: str, *, num_prototypes: int | None = None, title: str = ""
) -> None:
    """Draws the columns of metrics.csv against the epoch as one multi-panel PNG.

    Args:
        rows: Rows of metrics.csv (`RunDirectory.read_metrics`): strings, empty where a figure
            was not measured (epoch 0 holds only the untrained kNN accuracy).
        path: PNG file to write.
        num_prototypes: K, drawn as the ceiling of the prototypes-in-use panel when given.
        title: Figure title, e.g. the run's path.
    """
    _save(training_curves_figure(rows, num_prototypes=num_prototypes, title=title), path)


def training_curves_figure(
    rows: list[dict[str, str]], *, num_prototypes: int | None = None, title: str = ""
) -> Figure:
    """The figure `plot_training_curves` saves, returned so its drawn data can be inspected.

    Args:
        rows: Rows of metrics.csv, as for `plot_training_curves`.
        num_prototypes: K, drawn as the ceiling of the prototypes-in-use panel when given.
        title: Figure title.

    Returns:
        The figure, not yet attached to a canvas.
    """
    figure = Figure(figsize=(16, 7), layout="constrained")
    axes = figure.subplot_mosaic([["loss", "consistency", "kl", "kl_weight"],
                                  ["learning_rate", "prototypes_in_use", "knn", "knn"]])  # fmt: skip
    for column, panel_title in _CURVES.items():
        epochs, values = _column(rows, column)
        ax = axes[column]
        ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3)
        ax.set_title(panel_title, fontsize=10)
    if num_prototypes:
        ax = axes["prototypes_in_use"]
        ax.axhline(
            num_prototypes, color="grey", linestyle="--", linewidth=1, label=f"K = {num_prototypes}"
        )
        ax.set_ylim(0, num_prototypes * 1.05)
        ax.legend(loc="lower right")
    axes["learning_rate"].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    ax = axes["knn"]
    epochs, values = _column(rows, "knn_top1")
    # kNN is measured every few epochs: markers at the measurements, joined by a faint dotted
    # line, so the epochs in between do not read as measured.
    ax.plot(epochs, values, linestyle=":", linewidth=1, color="C0", alpha=0.6)
    ax.plot(epochs, values, linestyle="none", marker="o", markersize=4, color="C0")
    if len(epochs) and epochs[0] == 0:
        ax.annotate(
            f"untrained: {values[0]:.1f}%",
            (0, values[0]),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
        )
    if len(epochs):
        ax.annotate(
            f"{values[-1]:.1f}%",
            (epochs[-1], values[-1]),
            xytext=(0, 8),
            textcoords="offset points",
            ha="right",
        )
    ax.set_title("kNN top-1 % of the backbone at the measured epochs (0: untrained)", fontsize=10)
    ax.set_ylabel("%")
    ax.margins(y=0.15)  # room for the labels above the points
    if not len(epochs):  # a run without the monitor: say so rather than draw empty axes
        ax.text(
            0.5,
            0.5,
            "no kNN monitor in this run\n(it needs labelled held-out images: holdout > 0)",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.values():
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def prototype_class_counts(
    assignments: np.ndarray, labels: np.ndarray, num_prototypes: int, num_classes: int
) -> np.ndarray:
    """Counts `(num_classes, num_prototypes)`: entry (c, k) is how many class-c images went to k."""
    flat = np.asarray(labels, np.int64) * num_prototypes + np.asarray(assignments, np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_prototypes)
    return counts.reshape(num_classes, num_prototypes)


def plot_prototypes_vs_classes(
    assignments: np.ndarray,
    labels: np.ndarray,
    path: str,
    *,
    num_prototypes: int,
    num_classes: int,
    class_names: tuple[str, ...] | None = None,
    title: str = "",
) -> None:
    """Draws `prototypes_vs_classes_figure` as a PNG at `path`."""
    figure = prototypes_vs_classes_figure(
        assignments,
        labels,
        num_prototypes=num_prototypes,
        num_classes=num_classes,
        class_names=class_names,
        title=title,
    )
    _save(figure, path)


def prototypes_vs_classes_figure(
    assignments: np.ndarray,
    labels: np.ndarray,
    *,
    num_prototypes: int,
    num_classes: int,
    class_names: tuple[str, ...] | None = None,
    title: str = "",
) -> Figure:
    """For every class, the fraction of its images assigned to each prototype.

    Columns are the prototypes that received an image, grouped by their majority class (classes
    in order, within a class the fullest prototype first), so a model whose prototypes follow
    the classes shows a block diagonal. Thin lines separate the groups. Unused prototypes are
    left out and counted in the title. Empty cells are white and the colour scale is the square
    root of the fraction up to the largest one, so a class spread thinly over many prototypes
    (K = 1000) still shows. The title gives the share of images in a prototype whose majority
    class is theirs and, with K other than the number of classes, what the same prototypes give
    with the labels shuffled: with many prototypes for few images the share is high by
    construction.

    Args:
        assignments: Argmax prototype `(N,)` of each image.
        labels: Class `(N,)` of each image.
        num_prototypes: K.
        num_classes: Number of classes C.
        class_names: Names of the C classes; their indices when None.
        title: First line of the title, e.g. the model and dataset.
    """
    counts = prototype_class_counts(assignments, labels, num_prototypes, num_classes)
    used = np.flatnonzero(counts.sum(axis=0))
    majority = counts[:, used].argmax(axis=0)
    # lexsort sorts by its last key first: majority class, then the fullest prototype first.
    order = used[np.lexsort((-counts[majority, used], majority))]
    class_sizes = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fractions = counts[:, order] / class_sizes
    fractions = np.ma.masked_equal(fractions, 0.0)  # drawn white, apart from small shares
    group_of_column = np.sort(majority)

    width = min(16.0, max(8.0, 3.0 + 0.06 * len(order)))
    height = min(12.0, max(5.0, 1.5 + 0.12 * num_classes))
    figure = Figure(figsize=(width, height), layout="constrained")
    ax = figure.add_subplot()
    colours = colormaps["magma_r"].with_extremes(bad="white")
    image = ax.imshow(
        fractions,
        aspect="auto",
        cmap=colours,
        norm=PowerNorm(0.5, vmin=0.0, vmax=float(fractions.max())),
        # Beyond ~one column per pixel, nearest-neighbour sampling would drop whole columns.
        interpolation="nearest" if len(order) <= 1500 else "antialiased",
    )
    names = class_names or tuple(str(c) for c in range(num_classes))
    shown = range(num_classes) if num_classes <= _NAMED_CLASSES else range(0, num_classes, 10)
    ax.set_yticks(list(shown), [names[c] for c in shown])
    ax.set_ylabel("class")
    if num_classes <= _NAMED_CLASSES:
        # Each group of columns is labelled with its majority class at its centre; beyond this
        # many classes the diagonal itself shows the groups and lines would only add clutter.
        starts = np.concatenate([[0], np.flatnonzero(np.diff(group_of_column)) + 1])
        ends = np.append(starts[1:], len(order))
        for x in starts[1:] - 0.5:
            ax.axvline(x, color="grey", linewidth=0.6)
        ax.set_xticks((starts + ends - 1) / 2, [names[group_of_column[s]] for s in starts])
        ax.tick_params(axis="x", labelsize=8)
    else:
        ax.set_xticks([])
    ax.set_xlabel("prototypes, grouped by their majority class")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.9)
    colorbar.set_label("share of the class's images")
    share = counts[majority, used].sum() / max(len(labels), 1)
    summary = (
        f"{len(order)} of {num_prototypes} prototypes used by {len(labels)} images\n"
        f"{share:.0%} of the images sit in a prototype whose majority class is theirs"
    )
    if num_prototypes != num_classes:  # then the share is the cluster accuracy (majority vote)
        chance = chance_cluster_accuracy(
            assignments, labels, num_prototypes, num_classes=num_classes
        )
        summary += f" ({chance:.0f}% with the labels shuffled)"
    figure.suptitle(f"{title}\n{summary}" if title else summary, fontsize=10)
    return figure


def _column(rows: list[dict[str, str]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of the rows where column `name` is filled."""
    filled = [(int(row["epoch"]), float(row[name])) for row in rows if row.get(name)]
    epochs, values = zip(*filled) if filled else ((), ())
    return np.array(epochs, int), np.array(values, float)


def _save(figure: Figure, path: str) -> None:
    """Writes the figure as PNG through a temporary file and a rename."""
    FigureCanvasAgg(figure)
    temporary = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    figure.savefig(temporary, format="png", dpi=_DPI)
    os.replace(temporary, path)
