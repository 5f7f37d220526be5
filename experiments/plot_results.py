"""Training curves of the runs in docs/results/ (their metrics.csv copies) as PNGs in docs/img/.

python experiments/plot_results.py

Each figure has two panels: kNN top-1 on the 5k validation split against the epoch (epoch 0 is
the untrained backbone), and prototypes in use per batch against the epoch.
"""

import csv
import os

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
        "Main runs: 45k images",
        [
            ("main3", "preset: lr 0.12, 30 epochs, bfloat16", 100),
            ("main2", "lr 0.12, 18 epochs, bfloat16", 100),
            ("main", "lr 0.06, 12 epochs, float32 (session 1)", 100),
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
        "lambda schedule (10k subset, K=100, lr 0.06, session 1)",
        [
            ("tuneC_lr06", "decay 4 -> 1.5", 100),
            ("abl_lambda_const4", "constant 4", 100),
            ("abl_lambda_const15", "constant 1.5", 100),
        ],
        False,
    ),
    "ablation_k_lr06": (
        "Number of prototypes K (10k subset, lr 0.06, session 1)",
        [
            ("abl_k10", "K = 10", 10),
            ("tuneC_lr06", "K = 100", 100),
            ("abl_k1000", "K = 1000", 1000),
        ],
        True,
    ),
    "ablation_symmetric_lr06": (
        "One-sided vs symmetrised loss (10k subset, lr 0.06, session 1)",
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


def main():
    os.makedirs(IMAGES, exist_ok=True)
    for name, (title, runs, as_fraction) in FIGURES.items():
        present = [(stem, label, k, read(stem)) for stem, label, k in runs]
        present = [p for p in present if p[3]]
        if not present:
            continue
        fig, (ax_knn, ax_used) = plt.subplots(1, 2, figsize=(11, 4))
        for _stem, label, k, rows in present:
            epochs, knn = series(rows, "knn_top1")
            ax_knn.plot(epochs, knn, marker="o", label=label)
            epochs, used = series(rows, "prototypes_in_use")
            if as_fraction:
                used = [u / min(k, BATCH) for u in used]
            ax_used.plot(epochs, used, marker="o", label=label)
        if name == "main_curves":
            untrained = series(present[0][3], "knn_top1")[1][0]
            ax_knn.axhline(untrained, color="gray", linestyle=":", label="untrained")
            ax_knn.axhline(
                untrained + 20, color="red", linestyle="--", label="target: untrained + 20"
            )
        ax_knn.set(xlabel="epoch", ylabel="kNN top-1 on 5k validation (%)", title="kNN (k=200)")
        ax_used.set(
            xlabel="epoch",
            ylabel=f"in use / min(K, batch {BATCH})"
            if as_fraction
            else "prototypes in use per batch",
            title="prototypes in use",
        )
        if not as_fraction:
            ax_used.set_ylim(bottom=0)
        for ax in (ax_knn, ax_used):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(IMAGES, f"{name}.png"), dpi=110)
        plt.close(fig)
        print(f"wrote docs/img/{name}.png ({len(present)} runs)")


if __name__ == "__main__":
    main()
