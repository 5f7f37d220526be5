"""Screens levers at the start of their runs: each queued training is stopped after --epochs.

A lever that collapses the assignments or learns far more slowly shows it in its first epochs
(docs/results.md, section 8.1), so it can be judged there before it earns seeded runs. Each job is a queue line as `run_queue.sh` takes it, `NAME [SCRIPT.py] ARGS...`,
run to completion of epoch --epochs of its own schedule (an 8-epoch run's lambda and learning
rate at epoch 2, not a 2-epoch run's), then stopped with SIGTERM, as a cluster stops a job (the run directory stays
resumable). One tab-separated row per job goes to stdout and to --table as each job ends.

python experiments/screen.py --queue=runs/screen.txt --runs=runs/screen --table=runs/screen.tsv
"""

import argparse
import csv
import os
import signal
import subprocess
import sys
import time

COLUMNS = ("name", "epoch", "consistency", "kl", "knn_top1", "prototypes_in_use", "seconds")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_jobs(path: str) -> list[tuple[str, str, list[str]]]:
    """(name, script, arguments) of each line of a queue file; blank and # lines skipped."""
    jobs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            name, rest = words[0], words[1:]
            script = rest.pop(0) if rest and rest[0].endswith(".py") else "train.py"
            jobs.append((name, script, rest))
    return jobs


def epoch_row(metrics_path: str, epoch: int) -> dict | None:
    """The metrics.csv row of `epoch` once it holds its kNN figure, else None."""
    if not os.path.exists(metrics_path):
        return None
    with open(metrics_path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["epoch"] == str(epoch) and row.get("knn_top1"):
                return row
    return None


def screen(name: str, script: str, arguments: list[str], runs: str, epochs: int) -> dict:
    """Trains one job until its epoch `epochs` is recorded with kNN, then interrupts it."""
    workdir = os.path.join(runs, name)
    command = [sys.executable, script, *arguments, f"--workdir={workdir}"]
    with open(os.path.join(runs, f"{name}.log"), "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        row = None
        while process.poll() is None:
            row = epoch_row(os.path.join(workdir, "metrics.csv"), epochs)
            if row is not None:
                process.send_signal(signal.SIGTERM)
                break
            time.sleep(2)
        process.wait()
    row = row or epoch_row(os.path.join(workdir, "metrics.csv"), epochs)
    if row is None:
        return {"name": name, "epoch": epochs, "knn_top1": f"failed (exit {process.returncode})"}
    seconds = sum(float(r) for r in _column(workdir, "seconds", epochs))
    return {**{k: row.get(k, "") for k in COLUMNS}, "name": name, "seconds": f"{seconds:.0f}"}


def _column(workdir: str, column: str, last_epoch: int) -> list[str]:
    with open(os.path.join(workdir, "metrics.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r[column] for r in rows if r[column] and 0 < int(r["epoch"]) <= last_epoch]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--queue", required=True, help="queue file: NAME [SCRIPT.py] ARGS...")
    parser.add_argument("--runs", required=True, help="folder of the run directories and logs")
    parser.add_argument("--table", required=True, help="tab-separated rows, appended per job")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to train of each job")
    flags = parser.parse_args()
    if not os.path.isfile(flags.queue):
        parser.error(f"no queue file {flags.queue}; write one NAME [SCRIPT.py] ARGS line per job")
    os.makedirs(flags.runs, exist_ok=True)
    done = set()
    if os.path.exists(flags.table):
        with open(flags.table, encoding="utf-8") as f:
            done = {row["name"] for row in csv.DictReader(f, delimiter="\t")}
    else:
        with open(flags.table, "w", encoding="utf-8") as f:
            f.write("\t".join(COLUMNS) + "\n")
    for name, script, arguments in read_jobs(flags.queue):
        if name in done:
            continue
        row = screen(name, script, arguments, flags.runs, flags.epochs)
        line = "\t".join(str(row.get(k, "")) for k in COLUMNS)
        print(line, flush=True)
        with open(flags.table, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
