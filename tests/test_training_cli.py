"""`imgclf train` flags of the training controls: recorded in config.yaml, one line per epoch in a log."""

import csv

import pytest

from conftest import make_class_folder
from imgclf.cli import main
from imgclf.runs import RunDir


def test_train_flags_reach_config_yaml_and_the_log_has_one_line_per_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("imgclf.strategy.cpu_has_bfloat16", lambda: False)
    data = make_class_folder(tmp_path / "data", per_class=10)
    status = main(["train", str(data), "--out", str(tmp_path / "run"), "--model", "mlp", "--hidden", "16",
                   "--epochs", "3", "--batch-size", "8", "--optimizer", "sgd", "--momentum", "0", "--lr", "0.05",
                   "--schedule", "step", "--lr-step-epochs", "1", "--lr-factor", "0.5", "--label-smoothing", "0.1",
                   "--weight-decay", "0.0001", "--monitor", "val_macro_f1", "--patience", "5", "--sampler", "balanced",
                   "--mixed-precision", "--strategy", "default"])
    assert status == 0
    train = RunDir(tmp_path / "run").config().train
    assert (train.optimizer, train.momentum, train.schedule, train.lr_step_epochs, train.lr_factor) == (
        "sgd", 0.0, "step", 1, 0.5)
    assert (train.label_smoothing, train.weight_decay, train.monitor, train.sampler, train.mixed_precision,
            train.strategy) == (0.1, 0.0001, "val_macro_f1", "balanced", True, "default")
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and all("val_macro_f1" in line for line in epoch_lines)
    assert "mixed precision needs a GPU" in out
    with open(tmp_path / "run" / "history.csv") as handle:
        assert [float(row["learning_rate"]) for row in csv.DictReader(handle)] == pytest.approx([0.05, 0.025, 0.0125])


def test_a_bad_schedule_value_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--schedule", "linear"])
    assert "invalid choice: 'linear'" in capsys.readouterr().err


def test_train_with_a_manifest_keeps_class_names_as_a_scan_does(tmp_path):
    import json
    import unicodedata

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    assert main(["scan", str(data), "--out", str(tmp_path / "m.csv")]) == 0
    decomposed = unicodedata.normalize("NFD", "c\u00edrcle")  # a label written by a tool on macOS
    text = (tmp_path / "m.csv").read_text(encoding="utf-8").replace(",circle,", f",{decomposed},")
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    assert main(["train", str(data), "--manifest", str(tmp_path / "m.csv"), "--model", "mlp", "--hidden", "8",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "classes.json").read_text(encoding="utf-8")) == ["c\u00edrcle", "square"]


def test_train_with_a_manifest_refuses_a_run_inside_the_folder_and_split_flags(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    assert main(["scan", str(data), "--out", str(tmp_path / "m.csv")]) == 0
    common = ["--manifest", str(tmp_path / "m.csv"), "--model", "mlp", "--hidden", "8", "--epochs", "1"]
    assert main(["train", str(data), *common, "--out", str(data / "run")]) == 1
    assert "is inside the dataset" in capsys.readouterr().err and not (data / "run").exists()
    assert main(["train", str(data), *common, "--val", "0.3", "--out", str(tmp_path / "run")]) == 1
    assert "val cannot apply to a manifest: its images are split already" in capsys.readouterr().err
    assert main(["train", str(data), *common, "--out", str(tmp_path / "run")]) == 0
    assert "note: the splits are the manifest's own" in capsys.readouterr().out


def test_train_with_a_manifest_edited_by_hand_notes_repeats_leaks_and_tiny_classes(tmp_path, capsys):
    import shutil

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    shutil.copy(data / "circle" / "circle_000.png", data / "circle" / "copy.png")
    assert main(["scan", str(data), "--out", str(tmp_path / "m.csv")]) == 0
    with open(tmp_path / "m.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    by_name = {row[0].rsplit("/", 1)[1]: row for row in rows}
    by_name["copy.png"][2] = "test" if by_name["circle_000.png"][2] != "test" else "val"  # the copy in another split
    by_name["square_000.png"][1] = "squre"  # a typo makes a class of one image
    with open(tmp_path / "edited.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows, by_name["circle_001.png"]])  # a row pasted twice
    capsys.readouterr()
    assert main(["train", str(data), "--manifest", str(tmp_path / "edited.csv"), "--model", "mlp", "--hidden", "8",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"note: 1 row(s) of {tmp_path / 'edited.csv'} repeat the file of an earlier row (line 15 repeats line" in out
    assert "note: 1 image(s) appear in more than one split (a leak between splits)" in out
    assert "note: class 'squre' has only 1 usable image(s)" in out
    assert len(RunDir(tmp_path / "run").manifest().entries) == 13
