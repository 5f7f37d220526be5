"""Pretrain CARL: `python train.py --dataset=cifar10`, or just `python train.py` (offline digits).

The same program as the installed `carl-train` (carl_tf/cli/train.py); `--help` lists the flags.
"""

from carl_tf.cli.train import run

if __name__ == "__main__":
    run()
