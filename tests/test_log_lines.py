"""The lines a user reads: a damaged image named once, a stop on a line of its own, a result
printed once, and --help's precision rules."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from carl_tf import data
from carl_tf.cli import common
from carl_tf.run.progress import RESULT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_truncated_jpeg_is_named_and_the_decoders_own_message_held_back(tmp_path, caplog, capfd):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.jpg")
    whole = (tmp_path / "a" / "0.jpg").read_bytes()
    (tmp_path / "a" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    caplog.set_level(logging.WARNING, logger="carl_tf")
    source = data.load_source(f"folder:{tmp_path}", split="all", image_size=16)
    assert source.num_examples == 6
    warning = caplog.text
    assert "skipped 1 of 7 image files" in warning and str(tmp_path / "a" / "cut.jpg") in warning
    assert "JPEG library" not in capfd.readouterr().err


def test_the_line_after_ctrl_c_starts_on_a_line_of_its_own(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with pytest.raises(SystemExit) as stop:
        common._stopped(KeyboardInterrupt())
    assert stop.value.code == common.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "\nerror: interrupted; run the same command to resume\n"


def test_a_result_line_the_program_prints_itself_is_not_logged_twice(capsys):
    package = logging.getLogger("carl_tf")
    saved = package.handlers[:], package.level, package.propagate
    try:
        common.setup_logging()
        package.info("kept")
        package.info("a result", extra=RESULT)
        package.handlers[0].flush()
    finally:
        package.handlers[:], package.level, package.propagate = saved
    assert capsys.readouterr().err == "kept\n"


def test_help_states_the_precision_rules_for_gpus():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = " ".join(result.stdout.split())
    assert "compute capability 8.0 and up" in text and "mixed_float16 on GPUs" in text
