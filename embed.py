"""Embed a folder of images: `python embed.py --model=runs/digits --images=DIR --output=e.csv`.

The same program as the installed `carl-embed` (carl_tf/cli/embed.py); `--help` lists the flags.
"""

from carl_tf.cli.embed import run

if __name__ == "__main__":
    run()
