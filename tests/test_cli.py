"""The command lines follow habits: --help, --print_config, --config.FIELD with --dataset, hints."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from support import REPO, start

CASES = {
    "train_help": ("train.py", "--help"),
    "evaluate_help": ("evaluate.py", "--help"),
    "print_config": (
        "train.py",
        "--dataset=digits",
        "--config.weight_decay=1e-4",
        "--epochs=3",
        "--print_config",
    ),
    "tfds_with_field": ("train.py", "--dataset=mnist", "--config.momentum=0.8", "--print_config"),
    "negative_field": ("train.py", "--config.weight_decay=-1", "--print_config"),
    "shortcut_field": ("train.py", "--learning_rate=nan", "--print_config"),
    "unknown_field": ("train.py", "--config.wieght_decay=1"),
    "missing_config": ("train.py", "--config=does_not_exist.py"),
    "bad_preset_arg": ("train.py", "--config=cifar10:bogus"),
}


@pytest.fixture(scope="module")
def results():
    processes = {name: start(*args) for name, args in CASES.items()}
    return {name: (p.wait(), *p.communicate()) for name, p in processes.items()}


@pytest.mark.parametrize("name", ["train_help", "evaluate_help"])
def test_help_exits_zero_and_lists_the_flags(results, name):
    code, out, _ = results[name]
    assert code == 0 and "--dataset" in out


def test_print_config_shows_the_resolved_config_without_running(results):
    code, out, _ = results["print_config"]
    assert code == 0
    config = json.loads(out)
    assert config["weight_decay"] == 1e-4 and config["epochs"] == 3
    assert config["kl_decay_epochs"] == 2, "the decay follows --epochs"
    assert config["workdir"] == os.path.join("runs", "digits")


def test_a_source_without_preset_takes_config_fields_with_dataset_alone(results):
    code, out, err = results["tfds_with_field"]
    assert code == 0, err
    config = json.loads(out)
    assert (config["dataset"], config["momentum"], config["epochs"]) == ("mnist", 0.8, 200)


@pytest.mark.parametrize(
    "name, message",
    [
        ("negative_field", "error: weight_decay must be at least 0, got -1.0; fix --config.weight_decay"),
        ("shortcut_field", "error: learning_rate must be finite, got nan; fix --learning_rate"),
        ("unknown_field", "error: the config has no field 'wieght_decay'; did you mean weight_decay or"),
        ("missing_config", "error: no preset or config file 'does_not_exist.py'"),
        ("bad_preset_arg", "unknown preset argument 'bogus'; use smoke or none"),
    ],
)  # fmt: skip
def test_mistakes_get_one_line_naming_the_flag(results, name, message):
    code, out, err = results[name]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err[-2000:]
    assert "Traceback" not in err


def test_every_training_command_of_the_readme_resolves_its_config(tmp_path):
    """README's Training block, each line with --print_config: its flags parse and its config
    passes every check. TFDS data is not read; a folder is listed to size the run, so the
    README's example folder is replaced by one of generated images."""
    folder = tmp_path / "images"
    for index in range(12):
        (folder / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        pixels = np.full((16, 16, 3), 20 * index, np.uint8)
        Image.fromarray(pixels).save(folder / f"class{index % 2}" / f"{index}.png")
    with open(os.path.join(REPO, "README.md")) as f:
        section = f.read().split("## Training", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    block = block.replace("folder:/data/images", f"folder:{folder}")
    commands = [line.split("#")[0].split()[2:] for line in block.splitlines() if "train.py" in line]
    assert len(commands) >= 5
    processes = [start("train.py", *args, "--print_config") for args in commands]
    for args, process in zip(commands, processes):
        code = process.wait()
        out, err = process.communicate()
        assert code == 0, (args, err[-1500:])
        if "--help" not in args:
            assert json.loads(out)["workdir"].startswith("runs")


def test_overwrite_with_a_bad_setting_keeps_the_finished_run(tmp_path):
    """The whole config is checked before --overwrite deletes anything."""
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")
    (run / "metrics.csv").write_text("epoch\n1\n")
    for bad in ("--config.momentum=-1", "--learning_rate=nan", "--kl_start=inf"):
        process = start("train.py", "--dataset=digits", bad, f"--workdir={run}", "--overwrite")
        code = process.wait()
        _, err = process.communicate()
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: "), err[-1500:]
        assert sorted(p.name for p in run.iterdir()) == ["config.json", "export", "metrics.csv"]
