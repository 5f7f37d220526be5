"""Training curves of the runs in docs/results/ (their metrics.csv copies) as PNGs in docs/img/.

python experiments/plot_results.py

Each curve figure has two panels: kNN top-1 on the 5k validation split against the epoch (epoch 0
is the untrained backbone), and prototypes in use per batch against the epoch. `ablation_summary`
draws the final kNN and linear top-1 of every seeded row (seeded_rows.py) against the preset
row's spread.
"""

import csv
import os
import statistics

import matplotlib
import seeded_rows

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IMAGES = os.path.join(seeded_rows.ROOT, "docs", "img")
BATCH = 128  # at most this many prototypes can be in use in one batch

# figure name -> (title, [(csv stem, legend label, K[, batch])], plot prototypes in use as a
# fraction of min(K, batch); batch is BATCH unless given)
FIGURES = {
    "main_curves": (
        "Main runs: 45k training images, K=100",
        [
            ("main3", "preset: lr 0.12, 30 epochs, bfloat16", 100),
            ("main4", "preset, second run", 100),
            ("main2", "lr 0.12, 18 epochs, bfloat16", 100),
            ("main", "lr 0.06, 12 epochs, float32", 100),
            (
                "simclr_main",
                "SimCLR, the preset's recipe (kNN every 10 epochs, no prototypes)",
                100,
            ),
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
    "stability_k1000": (
        "K = 1000 on the 10k subset: where lambda ends decides collapse",
        [
            ("abl2_k1000", "batch 128, lambda 4 -> 1.5", 1000),
            ("k1000_l4_s0", "batch 128, lambda 4 (constant)", 1000),
            ("k1000_b256_s0", "batch 256, lambda 4 -> 1.5", 1000, 256),
            ("k1000_b256_l25_s0", "batch 256, lambda 4 -> 2.5 (cifar100 preset)", 1000, 256),
        ],
        True,
    ),
    "stability_lr": (
        "Learning rate on the 10k subset (K = 100, batch 128)",
        [
            ("tuneE_bf16_lr12", "lr 0.12 (preset)", 100),
            ("tuneF_bf16_lr24", "lr 0.24 (collapsed)", 100),
            ("warm1_lr24_s0", "lr 0.24 after 1 warmup epoch", 100),
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
    path = os.path.join(seeded_rows.RESULTS, f"{stem}.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def series(rows, field):
    points = [(int(float(r["epoch"])), float(r[field])) for r in rows if r.get(field)]
    return [p[0] for p in points], [p[1] for p in points]


def curves(name, title, runs, as_fraction):
    present = [(run[1], run[2], (run[3:] or (BATCH,))[0], read(run[0])) for run in runs]
    present = [p for p in present if p[3]]
    if not present:
        return 0
    batches = sorted({p[2] for p in present})
    fig, (ax_knn, ax_used) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, k, batch, rows in present:
        epochs, knn = series(rows, "knn_top1")
        ax_knn.plot(epochs, knn, marker="o", label=label)
        epochs, used = series(rows, "prototypes_in_use")
        if as_fraction:
            used = [u / min(k, batch) for u in used]
        ax_used.plot(epochs, used, marker="o")
    untrained = series(present[0][3], "knn_top1")[1][0]
    per_batch = " or ".join(str(b) for b in batches)
    ax_knn.axhline(untrained, color="gray", linestyle=":", label=f"untrained ({untrained:.1f})")
    ax_knn.set(xlabel="epoch", ylabel="kNN top-1 on 5k validation (%)", title="kNN (k=200)")
    ax_used.set(
        xlabel="epoch",
        ylabel="in use / min(K, batch)" if as_fraction else "prototypes in use per batch",
        title=f"prototypes in use (per batch of {per_batch})",
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
    """Final kNN and linear top-1 of every seeded row (seeded_rows.ROWS): one dot per seed and
    the row's mean ± sd, against the preset row's mean ± 2 pooled sd."""
    rows = {label: seeded_rows.row_values(runs) for label, runs in seeded_rows.ROWS.items()}
    for label, runs in seeded_rows.ROWS.items():
        if missing := seeded_rows.unprobed(runs):
            print(f"{label}: no probe for {', '.join(missing)}, left out of the plot")
    rows = {label: values for label, values in rows.items() if values["knn_top1"]}
    if not rows:
        return 0
    fig, ax = plt.subplots(figsize=(13, 5.2))
    reference = next(iter(rows.values()))
    x = list(range(len(rows)))
    for offset, field, color, name in (
        (-0.15, "knn_top1", "C0", "kNN top-1"),
        (0.15, "linear_top1", "C1", "linear top-1 (features)"),
    ):
        sd = seeded_rows.pooled_sd(rows.values(), field)
        mean = statistics.mean(reference[field])
        ax.axhspan(mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.12)
        ax.axhline(mean, color=color, linestyle="--", linewidth=1)
        for i, values in zip(x, rows.values()):
            v = values[field]
            ax.scatter([i + offset] * len(v), v, color=color, s=14, alpha=0.6)
            spread = statistics.stdev(v) if len(v) > 1 else 0.0
            ax.errorbar(
                i + offset,
                statistics.mean(v),
                yerr=spread,
                fmt="_",
                color=color,
                markersize=14,
                capsize=4,
                label=name if i == 0 else None,
            )
    labels = [f"{label}\n(n = {len(values['knn_top1'])})" for label, values in rows.items()]
    ax.set_xticks(x, [label.replace(", ", "\n", 1) for label in labels], fontsize=8)
    ax.set_ylabel("top-1 on 5k validation (%)")
    ax.grid(axis="y", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles += [plt.Rectangle((0, 0), 1, 1, color="gray", alpha=0.3)]
    names += ["first row: mean (dashed) ± 2 pooled sd (shaded)"]
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=9, frameon=False)
    ax.set_title("Ablations after 8 epochs on the 10k subset: dots are seeds, bars mean ± sd")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(os.path.join(IMAGES, "ablation_summary.png"), dpi=110)
    plt.close(fig)
    return sum(len(values["knn_top1"]) for values in rows.values())


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
