"""Copies each run's metrics.csv and probe.json into docs/results/ and prints a Markdown table.

python experiments/summarize.py [--runs=/tmp/runs] NAME...
python experiments/summarize.py --spread NAME...   # mean ± sd of runs already in docs/results/

Wall time is read from the queue logs, RUNS/queue*.log (experiments/run_queue.sh: "trained NAME
rc=0 in N s", which covers data loading, every epoch, the kNN checks and the export, not the
probe).
"""

import csv
import glob
import json
import os
import re
import shutil
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")


def spread(names):
    """Prints n, mean ± sample sd and range of the trained backbone's kNN and linear top-1."""
    figures = {"knn_top1": [], "linear_top1": []}
    for name in names:
        with open(os.path.join(RESULTS, f"{name}.probe.json")) as f:
            records = [json.loads(line) for line in f if line.strip()]
        trained = next(r for r in records if r["backbone"] == "trained")
        for field, values in figures.items():
            values.append(trained[field])
    for field, values in figures.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(
            f"{field}: n = {len(values)}, {statistics.mean(values):.2f} ± {sd:.2f} (sd), "
            f"range {min(values):.2f}-{max(values):.2f}, values {values}"
        )


def main(argv):
    if argv[:1] == ["--spread"]:
        spread(argv[1:])
        return
    runs = "/tmp/runs"
    names = []
    for arg in argv:
        if arg.startswith("--runs="):
            runs = arg.split("=", 1)[1]
        else:
            names.append(arg)
    os.makedirs(RESULTS, exist_ok=True)
    queue_log = "".join(open(path).read() for path in glob.glob(os.path.join(runs, "queue*.log")))
    print(
        "| run | epochs | wall time | prototypes in use (end) | kNN untrained | kNN trained "
        "| linear top-1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        workdir = os.path.join(runs, name)
        metrics = os.path.join(workdir, "metrics.csv")
        if not os.path.exists(metrics):
            print(f"| {name} | not run | | | | | |")
            continue
        shutil.copy(metrics, os.path.join(RESULTS, f"{name}.csv"))
        with open(metrics) as f:
            rows = list(csv.DictReader(f))
        knn = [(r["epoch"], float(r["knn_top1"])) for r in rows if r["knn_top1"]]
        last = rows[-1]
        probe = {}  # evaluate.py's record (run_queue.sh writes it as WORKDIR/probe.json)
        probe_path = os.path.join(workdir, "probe.json")
        if os.path.exists(probe_path):
            shutil.copy(probe_path, os.path.join(RESULTS, f"{name}.probe.json"))
            with open(probe_path) as f:
                probe = json.load(f)
        match = re.search(rf"trained {re.escape(name)} rc=\d+ in (\d+) s", queue_log)
        wall = f"{int(match.group(1)) / 60:.1f} min" if match else "?"
        linear = probe.get("linear_top1", "")
        linear = f"{linear:.2f}" if linear != "" else ""
        print(
            f"| {name} | {last['epoch']} | {wall} | {float(last['prototypes_in_use']):.1f} "
            f"| {knn[0][1]:.2f} | {knn[-1][1]:.2f} | {linear} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
