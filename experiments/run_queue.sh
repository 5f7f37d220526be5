#!/usr/bin/env bash
# Runs queued pretrainings one after another (never two at once), each followed by its linear
# probe. A job is a line "NAME [SCRIPT.py] ARGS..." in $QUEUE (default /tmp/runs/queue.txt):
# SCRIPT.py (default train.py) trains; the SimCLR baseline is train.py with --method=simclr.
# Lines can be appended while the queue runs. Logs and run directories go to $RUNS (default /tmp/runs).
# Usage: nohup experiments/run_queue.sh > /tmp/runs/queue.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-/tmp/runs}
QUEUE=${QUEUE:-$RUNS/queue.txt}
PY=${PY:-python}
mkdir -p "$RUNS"
touch "$QUEUE" "$RUNS/done.txt"
while true; do
  job=$(grep -v -x -F -f "$RUNS/done.txt" "$QUEUE" | grep -v '^\s*$' | grep -v '^#' | head -1)
  [ -z "$job" ] && break
  echo "$job" >> "$RUNS/done.txt"
  # Words split on any run of blanks, so queue files may align their columns.
  read -r name first rest <<< "$job"
  script=train.py; args="$first $rest"
  if [[ $first == *.py ]]; then script=$first; args=$rest; fi
  echo "$(date +%T) start $name: $script $args"
  start=$(date +%s)
  # shellcheck disable=SC2086
  $PY "$script" $args --workdir="$RUNS/$name" > "$RUNS/$name.log" 2>&1
  rc=$?  # before any command substitution below resets $?
  echo "$(date +%T) trained $name rc=$rc in $(( $(date +%s) - start )) s"
  if [ "$rc" -ne 0 ]; then
    echo "$(date +%T) not probed $name: $(tail -1 "$RUNS/$name.log")"
    continue
  fi
  # kNN and the features-mode linear probe on the run's full train / validation split.
  $PY evaluate.py --model="$RUNS/$name" --protocol=knn,linear --linear=features --plots=false \
    --output="$RUNS/$name/probe.json" > "$RUNS/$name.probe.log" 2>&1
  rc=$?
  echo "$(date +%T) probed $name rc=$rc: $(tail -1 "$RUNS/$name.probe.log")"
done
echo "$(date +%T) queue empty"
