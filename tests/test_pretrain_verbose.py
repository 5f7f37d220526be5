"""`carl_tf.pretrain` talks like `model.fit` without any logging set up, and `verbose=0` quiets it;
the epoch line's estimate of the time left leaves out the first step's tracing; metrics.csv holds
figures without float noise."""

import logging
import time

import pytest

import carl_tf
from carl_tf.configs import digits
from carl_tf.errors import UsageError
from carl_tf.run import progress
from carl_tf.run.rundir import RunDirectory


def smoke_config(epochs=1):
    config = digits.get_config("smoke")
    config.epochs, config.knn_every, config.train_subset = epochs, 1, 250
    return config


@pytest.fixture()
def no_carl_tf_handlers():
    """carl_tf's logger as a fresh program has it: no handler, no level of its own."""
    package = logging.getLogger("carl_tf")
    saved = package.handlers[:], package.level, package.propagate
    package.handlers[:] = []
    package.setLevel(logging.NOTSET)
    yield
    package.handlers[:], package.level, package.propagate = saved


@pytest.mark.slow
def test_pretrain_says_what_it_does_and_verbose_0_quiets_it(tmp_path, capsys, no_carl_tf_handlers):
    result = carl_tf.pretrain(smoke_config(), str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert result.trained
    assert "pretraining on 250 images of digits" in out  # the data
    # 3 batches of 64: the 58 images left over are said, not silently unused.
    assert "each epoch trains on 192 of the 250 images (3 whole batches of 64)" in out
    assert "kNN top-1 of the untrained backbone" in out
    assert "epoch 1/1 · loss" in out  # the epoch line, without a terminal too
    assert f"the model to {result.model_export}" in out and result.metrics in out  # the export

    again = carl_tf.pretrain(smoke_config(), str(tmp_path / "run"))
    assert not again.trained
    out = capsys.readouterr().out
    assert out.count("nothing to do") == 1 and "overwrite=True" in out

    carl_tf.pretrain(smoke_config(), str(tmp_path / "run"), verbose=0)
    assert capsys.readouterr().out == ""
    assert not logging.getLogger("carl_tf").handlers  # left as it was


def test_a_bad_verbose_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UsageError, match="verbose must be 'auto', 0, 1 or 2, got 3"):
        carl_tf.pretrain(smoke_config(), str(tmp_path / "run"), verbose=3)
    assert not (tmp_path / "run").exists()


def test_a_program_that_routes_carl_tfs_lines_keeps_them(capsys, caplog, no_carl_tf_handlers):
    caplog.set_level(logging.INFO, logger="carl_tf")
    with progress.talking("auto") as bar:
        logging.getLogger("carl_tf.x").info("a line")
    assert not bar  # no terminal under pytest
    assert capsys.readouterr().out == "" and "a line" in caplog.text


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_estimate_after_epoch_1_leaves_out_the_first_steps_tracing(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(time, "time", clock)
    log = progress.EpochLog(epochs=11)
    log.set_params({"steps": 5, "epochs": 11})
    caplog.set_level(logging.INFO, logger="carl_tf")
    log.on_train_begin()
    log.on_epoch_begin(0)
    clock.now += 20.0  # the first step: 19 s of tracing and a 1-s step
    log.on_train_batch_end(0)
    for batch in range(1, 5):
        clock.now += 1.0
        log.on_train_batch_end(batch)
    log.on_epoch_end(0, {"loss": 4.0})
    # Epoch 1 took 24 s; its last 4 steps give 5 s per epoch: 10 epochs, 50 s left.
    assert caplog.records[-1].getMessage().endswith("elapsed 0:24 · about 50 s left")
    log.on_epoch_begin(1)
    clock.now += 6.0
    log.on_epoch_end(1, {"loss": 4.0})
    assert caplog.records[-1].getMessage().endswith("elapsed 0:30 · about 54 s left")


def test_metrics_csv_holds_figures_without_float_noise(tmp_path):
    run_dir = RunDirectory(str(tmp_path))
    run_dir.append_metrics({"epoch": 0, "knn_top1": 27.500000000000004})
    run_dir.append_metrics({"epoch": 1, "loss": 4.658299922943115, "learning_rate": 1e-05})
    text = (tmp_path / "metrics.csv").read_text()
    assert "27.5," in text or text.rstrip().endswith("27.5") or ",27.5" in text
    assert "27.500000000000004" not in text and "4.6583" in text and "1e-05" in text
    assert float(run_dir.read_metrics()[1]["loss"]) == pytest.approx(4.6583, rel=1e-6)
