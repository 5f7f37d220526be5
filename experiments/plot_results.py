"""Training curves of the runs in docs/results/ (their metrics.csv copies) as PNGs in docs/img/.

python experiments/plot_results.py

Each curve figure has two panels: kNN top-1 on the 5k validation split against the epoch (epoch 0
is the untrained backbone), and prototypes in use per batch against the epoch. `ablation_summary`
draws the final kNN and linear top-1 of every ablation run next to the spread of the repeated
preset runs (docs/results.md, "Run-to-run spread").
"""

import csv
import json
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
IMAGES = os.path.join(ROOT, "docs", "img")
BATCH = 128  # at most this many prototypes can be in use in one batch

# figure name -> (title, [(csv stem, legend label, K)], plot prototypes as a fraction of K)
FIGURES = {
    "main_curves": (
        "Main runs: 45k training images, K=100",
        [
            ("main3", "preset: lr 0.12, 30 epochs, bfloat16", 100),
            ("main2", "lr 0.12, 18 epochs, bfloat16", 100),
            ("main", "lr 0.06, 12 epochs, float32", 100),
        ],
        False,
    ),
    "tuning_curves": (
        "Tuning on the 10k subset (8 epochs)",
        [
            ("tuneA_b128_lr03", "A: batch 128, lr 0.03, crop 0.08, head 2048", 100),
            ("tuneB_crop02_head512", "B: A + crop 0.2, head 512", 100),
            ("tuneC_lr06", "C: B + lr 0.06", 100),
            ("tuneD_lr12", "D: C at lr 0.12", 100),
            ("tuneE_bf16_lr12", "E: D in bfloat16 (preset)", 100),
            ("tuneF_bf16_lr24", "F: E at lr 0.24 (collapsed)", 100),
            ("tuneG_bf16_b64_lr12", "G: E at batch 64 (stopped)", 100),
            ("tuneH_wd1e4", "H: preset, weight decay 1e-4", 100),
        ],
        False,
    ),
    "ablation_lambda": (
        "lambda schedule (10k subset, K=100, preset lr 0.12)",
        [
            ("abl2_base", "decay 4 -> 1.5", 100),
            ("abl2_lambda_const4", "constant 4", 100),
            ("abl2_lambda_const15", "constant 1.5", 100),
        ],
        False,
    ),
    "ablation_k": (
        "Number of prototypes K (10k subset, preset lr 0.12)",
        [
            ("abl2_k10", "K = 10", 10),
            ("abl2_base", "K = 100", 100),
            ("abl2_k1000", "K = 1000", 1000),
        ],
        True,
    ),
    "ablation_symmetric": (
        "One-sided vs symmetrised loss (10k subset, preset lr 0.12)",
        [
            ("abl2_base", "one-sided (paper)", 100),
            ("abl2_symmetric", "symmetrised", 100),
        ],
        False,
    ),
    "ablation_lambda_lr06": (
        "lambda schedule (10k subset, K=100, lr 0.06, float32)",
        [
            ("tuneC_lr06", "decay 4 -> 1.5", 100),
            ("abl_lambda_const4", "constant 4", 100),
            ("abl_lambda_const15", "constant 1.5", 100),
        ],
        False,
    ),
    "ablation_k_lr06": (
        "Number of prototypes K (10k subset, lr 0.06, float32)",
        [
            ("abl_k10", "K = 10", 10),
            ("tuneC_lr06", "K = 100", 100),
            ("abl_k1000", "K = 1000", 1000),
        ],
        True,
    ),
    "ablation_symmetric_lr06": (
        "One-sided vs symmetrised loss (10k subset, lr 0.06, float32)",
        [
            ("tuneC_lr06", "one-sided (paper)", 100),
            ("abl_symmetric", "symmetrised", 100),
        ],
        False,
    ),
}


def read(stem):
    path = os.path.join(RESULTS, f"{stem}.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def series(rows, field):
    points = [(int(float(r["epoch"])), float(r[field])) for r in rows if r.get(field)]
    return [p[0] for p in points], [p[1] for p in points]


# The preset at the ablation size, run three times (float rounding apart), and the ablations;
# (csv stem, label) per bar group of ablation_summary.
REPEATS = ["abl2_base", "tuneE_bf16_lr12", "tuneD_lr12"]
ABLATIONS = [
    [
        ("abl2_lambda_const4", "lambda 4"),
        ("abl2_lambda_const15", "lambda 1.5"),
        ("abl2_k10", "K = 10"),
        ("abl2_k1000", "K = 1000"),
        ("abl2_symmetric", "symmetric"),
        ("tuneH_wd1e4", "wd 1e-4"),
    ],
    [
        ("tuneC_lr06", "preset\n(decay, K=100)"),
        ("abl_lambda_const4", "lambda 4"),
        ("abl_lambda_const15", "lambda 1.5"),
        ("abl_k10", "K = 10"),
        ("abl_k1000", "K = 1000"),
        ("abl_symmetric", "symmetric"),
    ],
]


def probe(stem):
    """The trained backbone's record in docs/results/STEM.probe.json (one JSON object a line)."""
    path = os.path.join(RESULTS, f"{stem}.probe.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return next((r for r in records if r["backbone"] == "trained"), None)


def curves(name, title, runs, as_fraction):
    present = [(stem, label, k, read(stem)) for stem, label, k in runs]
    present = [p for p in present if p[3]]
    if not present:
        return 0
    fig, (ax_knn, ax_used) = plt.subplots(1, 2, figsize=(11, 4.2))
    for _stem, label, k, rows in present:
        epochs, knn = series(rows, "knn_top1")
        ax_knn.plot(epochs, knn, marker="o", label=label)
        epochs, used = series(rows, "prototypes_in_use")
        if as_fraction:
            used = [u / min(k, BATCH) for u in used]
        ax_used.plot(epochs, used, marker="o")
    untrained = series(present[0][3], "knn_top1")[1][0]
    ax_knn.axhline(untrained, color="gray", linestyle=":", label=f"untrained ({untrained:.1f})")
    ax_knn.set(xlabel="epoch", ylabel="kNN top-1 on 5k validation (%)", title="kNN (k=200)")
    ax_used.set(
        xlabel="epoch",
        ylabel=f"in use / min(K, batch {BATCH})" if as_fraction else "prototypes in use per batch",
        title="prototypes in use (per batch of 128)",
    )
    ax_used.set_ylim(bottom=0, top=1.05 if as_fraction else None)
    for ax in (ax_knn, ax_used):
        ax.grid(alpha=0.3)
    handles, labels = ax_knn.get_legend_handles_labels()
    columns = 3 if len(labels) > 4 else len(labels)
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=9, frameon=False)
    fig.suptitle(title)
    rows_of_legend = -(-len(labels) // columns)
    fig.tight_layout(rect=(0, 0.03 + 0.05 * rows_of_legend, 1, 1))
    fig.savefig(os.path.join(IMAGES, f"{name}.png"), dpi=110)
    plt.close(fig)
    return len(present)


def ablation_summary():
    repeats = [probe(stem) for stem in REPEATS]
    if not all(repeats):
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    titles = ["preset lr 0.12, bfloat16", "lr 0.06, float32 (n = 1 each)"]
    drawn = 0
    for ax, group, title in zip(axes, ABLATIONS, titles):
        stems = [(stem, label, probe(stem)) for stem, label in group]
        stems = [s for s in stems if s[2]]
        x = list(range(len(stems)))
        for offset, field, color in ((-0.2, "knn_top1", "C0"), (0.2, "linear_top1", "C1")):
            values = [s[2][field] for s in stems]
            ax.bar(
                [i + offset for i in x],
                values,
                width=0.4,
                color=color,
                label="kNN top-1" if field == "knn_top1" else "linear top-1 (features)",
            )
            if ax is axes[0]:
                reference = [r[field] for r in repeats]
                mean, sd = statistics.mean(reference), statistics.stdev(reference)
                ax.axhspan(mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.15)
                ax.axhline(mean, color=color, linestyle="--", linewidth=1)
        ax.set_xticks(x, [s[1] for s in stems], fontsize=9)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        drawn += len(stems)
    axes[0].set_ylabel("top-1 on 5k validation (%)")
    axes[0].set_ylim(30, 42)
    handles, labels = axes[0].get_legend_handles_labels()
    labels = [f"{label}, n = 1" for label in labels]
    handles += [plt.Rectangle((0, 0), 1, 1, color="gray", alpha=0.3)]
    labels += [f"preset, n = {len(REPEATS)}: mean (dashed) ± 2 sd (shaded), per metric"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Ablations after 8 epochs on the 10k subset (K=100, lambda 4 -> 1.5 unless named)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(os.path.join(IMAGES, "ablation_summary.png"), dpi=110)
    plt.close(fig)
    return drawn


def main():
    os.makedirs(IMAGES, exist_ok=True)
    for name, (title, runs, as_fraction) in FIGURES.items():
        count = curves(name, title, runs, as_fraction)
        if count:
            print(f"wrote docs/img/{name}.png ({count} runs)")
    count = ablation_summary()
    if count:
        print(f"wrote docs/img/ablation_summary.png ({count} runs)")


if __name__ == "__main__":
    main()
