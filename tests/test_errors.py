"""Errors name the fields a library user sets; the command-line programs print their flags."""

import pytest

from carl_tf.cli import common
from carl_tf.errors import DataError, RunDirectoryError, UsageError
from carl_tf.run.config import ConfigFieldError


def flag(field: str) -> str:
    return f"--{field}"


def test_an_error_names_its_fields_and_with_flags_names_their_flags():
    error = DataError(
        "no TFDS data", "point data_dir at it or set download", fields=("data_dir", "download")
    )
    assert str(error) == "no TFDS data; point data_dir at it or set download"
    assert error.field == "data_dir" and error.problem == "no TFDS data"
    flagged = error.with_flags(flag)
    assert type(flagged) is DataError and flagged.fields == error.fields
    assert str(flagged) == "no TFDS data; point --data_dir at it or set --download"
    assert str(error) == "no TFDS data; point data_dir at it or set download"  # unchanged


def test_only_whole_field_names_become_flags():
    error = UsageError(
        "holdout 0.5 is too large", "change holdout (not holdout_seed)", fields=("holdout",)
    )
    assert (
        str(error.with_flags(flag))
        == "holdout 0.5 is too large; change --holdout (not holdout_seed)"
    )


def test_an_error_without_fields_is_its_message():
    assert str(UsageError("plain")) == "plain" and UsageError("plain").field is None
    assert str(UsageError("problem", "the fix")) == "problem; the fix"
    assert str(UsageError("problem", fields=("epochs",))) == "problem; fix epochs"


def test_config_field_error_keeps_its_messages():
    error = ConfigFieldError("momentum", "momentum must be in [0, 1], got -1.0")
    assert str(error) == "momentum must be in [0, 1], got -1.0; fix the config field 'momentum'"
    assert str(error.with_flag("--config.momentum")).endswith("; fix --config.momentum")
    assert type(error.with_flags(flag)) is ConfigFieldError


def test_run_main_prints_the_flags_of_the_fields(monkeypatch, capsys):
    # The program's logging and signal handlers stay out of the test process.
    monkeypatch.setattr(common, "setup_logging", lambda: None)
    monkeypatch.setattr(common.signals, "install", lambda: None)

    def main(argv):
        raise RunDirectoryError(
            "workdir x is in use", "choose another workdir", fields=("workdir",)
        )

    with pytest.raises(SystemExit) as exited:
        common.run_main(main, flag)(["train.py"])
    assert exited.value.code == common.EXIT_USAGE
    assert capsys.readouterr().err == "error: workdir x is in use; choose another --workdir\n"


def test_a_failed_run_names_the_flags_to_change_and_exits_as_a_failure(monkeypatch, capsys):
    """A NaN stop raised by pretrain names config fields; train.py shows them as flags."""
    import ml_collections

    from carl_tf.errors import TrainingFailed
    from carl_tf.run.callbacks import StopOnNaN
    from carl_tf.training.pretrain import raise_on_failure

    monkeypatch.setattr(common, "setup_logging", lambda: None)
    monkeypatch.setattr(common.signals, "install", lambda: None)
    guard = StopOnNaN()
    guard.failed_at = (3, 7)
    config = ml_collections.ConfigDict({"learning_rate": 0.4})
    with pytest.raises(TrainingFailed) as raised:
        raise_on_failure(config, "mixed_bfloat16", [guard])
    assert str(raised.value) == (
        "the loss became NaN at epoch 3, batch 7; lower learning_rate (now 0.4) or set "
        "precision to float32 and rerun with overwrite"
    )

    def main(argv):
        raise raised.value

    with pytest.raises(SystemExit) as exited:
        common.run_main(main, flag)(["train.py"])
    assert exited.value.code == common.EXIT_FAILED
    assert capsys.readouterr().err == (
        "error: the loss became NaN at epoch 3, batch 7; lower --learning_rate (now 0.4) or "
        "set --precision to float32 and rerun with --overwrite\n"
    )
