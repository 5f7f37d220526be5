"""experiments/screen.py: the queue lines it reads and the epoch row it stops a run on."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import screen  # noqa: E402


def test_queue_lines_name_the_script_or_default_to_train(tmp_path):
    queue = tmp_path / "queue.txt"
    queue.write_text(
        "# a comment\n\nbase   --config=x --seed=1\nsimclr experiments/my_method.py --config=x\n"
    )
    assert screen.read_jobs(str(queue)) == [
        ("base", "train.py", ["--config=x", "--seed=1"]),
        ("simclr", "experiments/my_method.py", ["--config=x"]),
    ]


def test_a_run_stops_on_the_epoch_row_that_holds_its_knn(tmp_path):
    metrics = tmp_path / "metrics.csv"
    assert screen.epoch_row(str(metrics), 2) is None  # not written yet
    metrics.write_text("epoch,loss,knn_top1\n0,,28.4\n1,4.2,\n2,4.0,\n")
    assert screen.epoch_row(str(metrics), 2) is None  # epoch 2 without its kNN yet
    metrics.write_text("epoch,loss,knn_top1\n0,,28.4\n1,4.2,\n2,4.0,33.2\n")
    assert screen.epoch_row(str(metrics), 2)["knn_top1"] == "33.2"
