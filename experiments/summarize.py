"""Copies each run's metrics.csv and probe.json into docs/results/ and prints a Markdown table.

python experiments/summarize.py [--runs=/tmp/runs] NAME...
python experiments/summarize.py --spread NAME...   # mean ± sd of runs already in docs/results/
python experiments/summarize.py --rows             # the seeded rows of seeded_rows.py

Wall time is read from the queue logs, RUNS/queue*.log (experiments/run_queue.sh: "trained NAME
rc=0 in N s", which covers data loading, every epoch, the kNN checks and the export, not the
probe).
"""

import csv
import glob
import os
import re
import shutil
import statistics
import sys

import seeded_rows


def spread(names):
    """Prints n, mean ± sample sd and range of the trained backbone's kNN and linear top-1.

    Exits with a one-line message if a run has no probe file in docs/results/.
    """
    missing = [name for name in names if seeded_rows.probe(name) is None]
    if not names or missing:
        sys.exit(
            f"no probe file {', '.join(f'{n}.probe.json' for n in missing)} in "
            f"{os.path.relpath(seeded_rows.RESULTS)}; copy the runs there first with "
            "`summarize.py --runs=RUNS NAME...`"
            if missing
            else "name the runs: summarize.py --spread NAME..."
        )
    figures = {"knn_top1": [], "linear_top1": []}
    for name in names:
        trained = seeded_rows.probe(name)
        for field, values in figures.items():
            values.append(trained[field])
    for field, values in figures.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(
            f"{field}: n = {len(values)}, {statistics.mean(values):.2f} ± {sd:.2f} (sd), "
            f"range {min(values):.2f}-{max(values):.2f}, values {values}"
        )


def rows_table():
    """The seeded rows as Markdown: mean ± sd per metric, each row's difference from the first,
    in bold where it exceeds twice its standard error (seeded_rows.threshold), and the median
    seconds per epoch of training alone (seeded_rows.epoch_seconds; the machine was shared)."""
    values = {label: seeded_rows.row_values(runs) for label, runs in seeded_rows.ROWS.items()}
    sds = {f: seeded_rows.pooled_sd(values.values(), f) for f in seeded_rows.FIELDS}
    print(
        "pooled sd: "
        + ", ".join(f"{f} {sd:.2f}" for f, sd in sds.items())
        + "; bold: beyond 2 standard errors of the difference"
    )
    print("| setting | n | kNN top-1 | linear top-1 | Δ kNN | Δ linear | s / epoch | runs |")
    print("|---|---|---|---|---|---|---|---|")
    reference = next(iter(values.values()))
    for label, row in values.items():
        cells = []
        for field in seeded_rows.FIELDS:
            v = row[field]
            sd = f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else ""
            cells.append(f"{statistics.mean(v):.2f}{sd}" if v else "not run")
        deltas = []
        for field in seeded_rows.FIELDS:
            v, ref = row[field], reference[field]
            if row is reference or not v or not ref:
                deltas.append("-")
                continue
            delta = statistics.mean(v) - statistics.mean(ref)
            limit = seeded_rows.threshold(sds[field], len(v), len(ref))
            deltas.append(f"**{delta:+.2f}**" if abs(delta) > limit else f"{delta:+.2f}")
        names = seeded_rows.ROWS[label]
        runs = ", ".join(f"`{name}`" for name in names)
        seconds = [t for t in map(seeded_rows.epoch_seconds, names) if t is not None]
        cost = f"{statistics.median(seconds):.0f}" if seconds else "-"
        columns = [label, str(len(row["knn_top1"])), *cells, *deltas, cost, runs]
        print("| " + " | ".join(columns) + " |")
    for label, names in seeded_rows.ROWS.items():
        if missing := seeded_rows.unprobed(names):
            print(f"{label}: no probe for {', '.join(missing)}, left out of n", file=sys.stderr)


def main(argv):
    if argv[:1] == ["--spread"]:
        spread(argv[1:])
        return
    if argv[:1] == ["--rows"]:
        rows_table()
        return
    runs = "/tmp/runs"
    names = []
    for arg in argv:
        if arg.startswith("--runs="):
            runs = arg.split("=", 1)[1]
        else:
            names.append(arg)
    results = seeded_rows.RESULTS
    os.makedirs(results, exist_ok=True)
    # Oldest log first, so the last "trained NAME" line is the newest run of that name.
    logs = sorted(glob.glob(os.path.join(runs, "queue*.log")), key=os.path.getmtime)
    queue_log = "".join(open(path).read() for path in logs)
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
        shutil.copy(metrics, os.path.join(results, f"{name}.csv"))
        with open(metrics) as f:
            rows = list(csv.DictReader(f))
        knn = [(r["epoch"], float(r["knn_top1"])) for r in rows if r["knn_top1"]]
        last = rows[-1]
        probe = {}  # evaluate.py's record (run_queue.sh writes it as WORKDIR/probe.json)
        probe_path = os.path.join(workdir, "probe.json")
        if os.path.exists(probe_path):
            with open(probe_path) as f:
                text = f.read()
            # The copy names the run directory as the commands of docs/results.md do.
            text = text.replace(os.path.abspath(runs).rstrip("/") + "/", "runs/")
            with open(os.path.join(results, f"{name}.probe.json"), "w") as f:
                f.write(text)
            probe = seeded_rows.probe(name)
        times = re.findall(rf"trained {re.escape(name)} rc=0 in (\d+) s", queue_log)
        wall = f"{int(times[-1]) / 60:.1f} min" if times else "?"
        # SimCLR has no prototypes: its metrics.csv leaves the column empty.
        in_use = f"{float(last['prototypes_in_use']):.1f}" if last.get("prototypes_in_use") else "-"
        linear = probe.get("linear_top1", "")
        linear = f"{linear:.2f}" if linear != "" else ""
        print(
            f"| {name} | {last['epoch']} | {wall} | {in_use} "
            f"| {knn[0][1]:.2f} | {knn[-1][1]:.2f} | {linear} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
