"""The seeded rows of docs/results.md (one run per seed) and the rule that reads them against noise.

Each row is one setting at the ablation size (10k images, 8 epochs unless named), trained with
seeds 0, 1 and 2; a seed changes the initialisation, the views and the data order. `summarize.py --rows`
prints the table, `plot_results.py` draws it. A difference between two rows counts as beyond
the noise when it exceeds twice its standard error, with the sample sd pooled over every row
(each row's own sd rests on 3 runs only).
"""

import csv
import json
import math
import os
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")

# label -> the runs behind it, seed 0 first; the first row is the reference of the others.
ROWS = {
    "CARL, lambda 4 -> 1.5, K = 100 (preset)": ["abl2_base", "base_s1", "base_s2"],
    "lambda constant 4": ["abl2_lambda_const4", "const4_s1", "const4_s2"],
    "lambda constant 1.5": ["abl2_lambda_const15", "const15_s1", "const15_s2"],
    "K = 10": ["abl2_k10", "k10_s1", "k10_s2"],
    "K = 1000": ["abl2_k1000", "k1000_s1", "k1000_s2"],
    "symmetrised loss": ["abl2_symmetric", "sym_s1", "sym_s2"],
    "multi-crop, 4 small views": ["mc4_s0", "mc4_s1", "mc4_s2"],
    "SimCLR (NT-Xent, T = 0.2)": ["simclr_s0", "simclr_s1", "simclr_s2"],
    # The preset for 12 epochs: about the time of 8 symmetrised or SimCLR epochs.
    "CARL preset, 12 epochs": ["base12ep_s1", "base12ep_s2"],
}
FIELDS = ("knn_top1", "linear_top1")


def probe(name):
    """The trained backbone's figures in docs/results/NAME.probe.json, or None if not run.

    evaluate.py writes one JSON object of figures; older probes wrote one record per line,
    each naming its `backbone` (trained or untrained).
    """
    path = os.path.join(RESULTS, f"{name}.probe.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return next((r for r in records if r["backbone"] == "trained"), None)


def epoch_seconds(name):
    """Median seconds of the run's epochs 2+ without a kNN check: the cost of training alone
    (epoch 1 also traces the step), or None if not run."""
    path = os.path.join(RESULTS, f"{name}.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows if int(r["epoch"]) > 1 and not r["knn_top1"]]
    return statistics.median(seconds) if seconds else None


def row_values(runs):
    """{field: [value per run that has a probe]} for one row."""
    records = [r for r in (probe(name) for name in runs) if r]
    return {field: [r[field] for r in records] for field in FIELDS}


def unprobed(runs):
    """The runs of a row without a probe file in RESULTS: a row's n counts only probed runs,
    so the tables and plots name these instead of shrinking the row silently."""
    return [name for name in runs if probe(name) is None]


def pooled_sd(rows_values, field):
    """Sample sd pooled over rows: sqrt(sum of squared deviations / sum of (n - 1))."""
    squares, dof = 0.0, 0
    for values in rows_values:
        v = values[field]
        if len(v) > 1:
            mean = statistics.mean(v)
            squares += sum((x - mean) ** 2 for x in v)
            dof += len(v) - 1
    return math.sqrt(squares / dof) if dof else float("nan")


def threshold(sd, n_a, n_b):
    """Twice the standard error of a difference of two means of n_a and n_b runs."""
    return 2 * sd * math.sqrt(1 / n_a + 1 / n_b)
