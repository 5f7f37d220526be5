"""Evaluate a CARL run: `python evaluate.py --model=runs/digits` (kNN, linear probe, clustering).

The same program as the installed `carl-evaluate` (carl_tf/cli/evaluate.py); `--help` lists the
flags.
"""

from carl_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
