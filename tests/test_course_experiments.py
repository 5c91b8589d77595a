"""scripts/course_experiments.py: the course's sequence as imgclf runs, and the inputs it refuses."""

import json
import sys
from pathlib import Path

import pytest

from conftest import make_class_folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import course_experiments  # noqa: E402


def test_a_step_prints_its_row_beside_the_course_and_writes_json(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=10, classes=["circle", "square"])
    (data / "circle" / "broken.png").write_bytes(b"not an image")
    assert course_experiments.main([str(data), "--out", str(tmp_path / "runs"), "--steps", "5",
                                    "--json", str(tmp_path / "rows.json")]) == 0
    table, err = capsys.readouterr()
    assert (f"note: 1 file(s) left out with errors, e.g. {data / 'circle' / 'broken.png'} (not_an_image); "
            f"`imgclf audit {data} --out DIR` lists every one") in err
    assert "| step (data) | test error | epochs | s/epoch | course (MNIST) |" in table
    row = json.loads((tmp_path / "rows.json").read_text())["rows"][0]
    assert row["step"] == "SGD instead of Adam" and row["epochs"] == 2 and f"| {row['test_error']:.2f}% | 2 |" in table
    assert (row["options"]["optimizer"], row["options"]["momentum"], row["options"]["learning_rate"]) == ("sgd", 0.0, 0.01)


@pytest.mark.parametrize("arguments, named", [
    (["--steps", "8"], "argument --steps: invalid choice: 8"),
    (["--steps", "0"], "argument --steps: invalid choice: 0"),
    (["--test", "0"], "has no test images, and the experiments report test error"),
])
def test_arguments_that_cannot_give_the_table_are_refused_before_training(tmp_path, capsys, arguments, named):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    with pytest.raises(SystemExit):
        course_experiments.main([str(data), "--out", str(tmp_path / "runs"), *arguments])
    assert named in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_one_class_is_refused_naming_the_folder(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle"])
    with pytest.raises(SystemExit):
        course_experiments.main([str(data), "--out", str(tmp_path / "runs")])
    assert f"{data} holds 1 class(es) with usable images" in capsys.readouterr().err


def test_an_interrupted_dataset_build_is_refused_with_the_command_that_finishes_it(tmp_path, capsys):
    data = make_class_folder(tmp_path / "digits", per_class=6, classes=["circle", "square"])
    (data / ".imgclf-dataset.json").write_text('{"params": {"recipe": "digits", "size": 32}, "complete": false}')
    with pytest.raises(SystemExit) as exit_info:
        course_experiments.main([str(data), "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert f"run `python datasets/digits.py {data}` again with the same options (size 32)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_presplit_folder_whose_test_folder_is_empty_is_refused(tmp_path, capsys):
    data = tmp_path / "fashion"
    make_class_folder(data / "train", per_class=6, classes=["circle", "square"])
    for label in ("circle", "square"):
        (data / "test" / label).mkdir(parents=True)
    with pytest.raises(SystemExit):
        course_experiments.main([str(data), "--out", str(tmp_path / "runs")])
    assert (f"{data / 'test'} holds no usable images, so the test error would be measured on images carved out of "
            "train/ instead of the folder's own test split") in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("target, named", [
    (["--json", "{tmp}/jsondir"], "--json {tmp}/jsondir is a folder. Pass the path of a file for the rows"),
    (["--json", "{tmp}/notes.txt/rows.json"], "cannot be written: {tmp}/notes.txt is a file, not a folder"),
    (["--out", "{tmp}/notes.txt"], "--out {tmp}/notes.txt cannot hold the runs: {tmp}/notes.txt is a file"),
    (["--out", "{tmp}/data/runs"], "--out {tmp}/data/runs is inside the dataset {tmp}/data: the next scan"),
])
def test_a_json_or_out_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, target, named):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    (tmp_path / "jsondir").mkdir()
    (tmp_path / "notes.txt").write_text("notes")
    arguments = ["--out", str(tmp_path / "runs"), "--steps", "1"] + [a.format(tmp=tmp_path) for a in target]
    with pytest.raises(SystemExit) as exit_info:
        course_experiments.main([str(data), *arguments])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and named.format(tmp=tmp_path) in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (data / "runs").exists()
    assert (tmp_path / "notes.txt").read_text() == "notes"


@pytest.mark.parametrize("line, seconds", [
    ("epoch 1/2 (train): loss 0.6539 accuracy 0.6250 lr 0.001, 1.6 s, 5.1 images/s", 1.6),  # under 10 images/s
    ("epoch 2/2 (train): loss 0.5530 accuracy 0.8750 lr 0.0005, 0.1 s, 1,204 images/s", 0.1),
])
def test_every_epoch_line_counts_as_an_epoch(line, seconds):
    assert float(course_experiments.EPOCH_SECONDS.match(line).group(1)) == seconds
