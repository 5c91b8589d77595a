import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import make_class_folder


def run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "imgclf", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_import_and_help_do_not_import_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "import imgclf\n"
        "from imgclf.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['scan', '--help'], ['evaluate', '--help'], ['models', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'albumentations', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_command_help_shows_an_example():
    for command in ("scan", "train", "evaluate", "models"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "example:" in result.stdout and f"imgclf {command}" in result.stdout


def test_scan_prints_class_table(image_folder):
    result = run_cli("scan", image_folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["class", "train", "val", "test", "total"]
    assert any(line.split()[0] == "circle" and line.split()[-1] == "12" for line in lines)


def test_scan_of_missing_folder_says_so(tmp_path):
    result = run_cli("scan", tmp_path / "missing")
    assert result.returncode == 1
    assert "Dataset not found" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_lists_registered_models(capsys):
    from imgclf.cli import main

    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"mlp", "cnn", "small_cnn"} <= set(rows)
    assert rows["mobilenet_v2"][1:4] == ["backbone", "224x224", "2,257,984"]
    assert rows["efficientnet_b0"][4:] == ["imagenet", "(download)"]


@pytest.mark.slow
def test_train_then_evaluate_end_to_end(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=14)
    run = tmp_path / "runs" / "tiny"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_cli("scan", data, "--val", "0.2", "--test", "0.2", "--seed", "1", "--out", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    result = run_cli("train", data, "--manifest", tmp_path / "m.csv", "--model", "cnn", "--epochs", "2", "--out", run,
                     env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model written to" in result.stdout
    assert "Traceback" not in result.stderr and "oneDNN" not in result.stderr
    assert (run / "manifest.csv").read_text() == (tmp_path / "m.csv").read_text()
    for name in ("config.yaml", "manifest.csv", "classes.json", "history.csv", "model.keras", "environment.json",
                 "augment.yaml", "checkpoints/last.keras", "checkpoints/state.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "classes.json").read_text()) == ["circle", "square", "triangle"]
    with open(run / "history.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2

    result = run_cli("evaluate", run, "--split", "test", env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error rate" in result.stdout
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["error_rate"] == pytest.approx(1 - metrics["accuracy"])
    # The files line names the gallery of mistakes only when there is one.
    assert ("gallery.png" in result.stdout) == (run / "eval" / "test" / "gallery.png").exists()
    assert metrics["images"] == sum(1 for row in csv.DictReader(open(run / "manifest.csv")) if row["split"] == "test")
    matrix = list(csv.reader(open(run / "eval" / "test" / "confusion_matrix.csv")))
    assert matrix[0][1:] == ["circle", "square", "triangle"]
    assert [row[0] for row in matrix[1:]] == ["circle", "square", "triangle"]
    assert sum(int(v) for row in matrix[1:] for v in row[1:]) == metrics["images"]
    png = run / "eval" / "test" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_refuses_to_overwrite_a_finished_run(tmp_path, image_folder, capsys):
    from imgclf.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"x")
    assert main(["train", str(image_folder), "--out", str(run), "--epochs", "1"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_train_reports_bad_config_key(tmp_path, image_folder, capsys):
    from imgclf.cli import main

    (tmp_path / "exp.yaml").write_text("train:\n  epoch: 3\n")
    config = str(tmp_path / "exp.yaml")
    assert main(["train", str(image_folder), "--out", str(tmp_path / "run"), "--config", config]) == 1
    assert "unknown key train.epoch" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--model", "resnet", "Unknown model 'resnet'. Valid models: mobilenet_v2, mobilenet_v3_small"),
    ("--augment", "strong", "Unknown augmentation preset 'strong'. Valid presets: auto, none, light, standard, heavy"),
])
def test_train_rejects_unknown_names_before_reading_images(tmp_path, flag, value, message, capsys):
    from imgclf.cli import main

    assert main(["train", str(tmp_path / "not-read-yet"), flag, value, "--out", str(tmp_path / "run")]) == 1
    error = capsys.readouterr().err
    assert message in error and "not found" not in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, target, message", [
    (["scan", "{data}", "--out", "{folder}"], "{folder}", "Is a directory (it is a folder; name a file inside it)"),
    (["scan", "{data}", "--out", "{file}/m.csv"], "{file}", "Not a directory (a part of the path is a file"),
    (["audit", "{data}", "--out", "{file}"], "{file}", "Not a directory"),
    (["audit", "{data}", "--out", "{folder}", "--quarantine", "{file}/q"], "{file}", "Not a directory"),
    (["compare", "{folder}", "{folder}", "--out", "{file}"], "{file}", "Not a directory"),
    (["augment-preview", "{data}", "--out", "{folder}/preview"], "{folder}/preview",
     "must end with an image extension such as .png or .jpg. Received: no extension"),
])
def test_an_output_path_the_system_would_refuse_is_named_before_any_work(tmp_path, command, target, message, capsys):
    from imgclf.cli import main

    paths = {"data": tmp_path / "not-scanned", "folder": tmp_path / "folder", "file": tmp_path / "file.txt"}
    paths["folder"].mkdir()
    paths["file"].write_text("mine\n")
    assert main([part.format(**paths) for part in command]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"imgclf {command[0]}: error: ") and target.format(**paths) in error and message in error
    assert "not-scanned" not in error and "Traceback" not in error
    assert paths["file"].read_text() == "mine\n"


def test_train_into_a_file_or_a_folder_of_other_files_fails_before_the_scan(tmp_path, capsys):
    from imgclf.cli import main

    (tmp_path / "file.txt").write_text("mine\n")
    assert main(["train", str(tmp_path / "not-scanned"), "--out", str(tmp_path / "file.txt")]) == 1
    assert f"{tmp_path / 'file.txt'} is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "history.csv").write_text("mine\n")
    assert main(["train", str(tmp_path / "not-scanned"), "--out", str(tmp_path / "project"), "--overwrite"]) == 1
    assert "is not an imgclf run but holds history.csv" in capsys.readouterr().err
    assert (tmp_path / "project" / "history.csv").read_text() == "mine\n"


@pytest.mark.parametrize("text, size", [("64", (64, 64)), ("48x64", (48, 64)), (" 48 X 64 ", (48, 64)), ("48,64", (48, 64))])
def test_image_size_reads_one_number_or_two(text, size):
    from imgclf.cli import _image_size

    assert _image_size(text) == size


@pytest.mark.parametrize("text", ["16x", "x16", "16,,16", "0", "16x0", "a", "16x16x3"])
def test_image_size_refuses_a_truncated_or_bad_size(text):
    import argparse

    from imgclf.cli import _image_size

    with pytest.raises(argparse.ArgumentTypeError, match="expected SIZE or HEIGHTxWIDTH"):
        _image_size(text)


def test_train_refuses_a_run_folder_inside_the_dataset(tmp_path, capsys):
    from imgclf.cli import main

    data = make_class_folder(tmp_path / "data", per_class=2)
    assert main(["train", str(data), "--out", str(data / "myrun")]) == 1
    assert "is inside the dataset" in capsys.readouterr().err and not (data / "myrun").exists()


def test_ctrl_c_inside_a_wait_on_a_thread_is_reported_as_an_interrupt(tmp_path, capsys, monkeypatch):
    from imgclf import cli

    def interrupted_inside_a_wait(args):  # what Condition.wait raises when Ctrl-C lands as it releases its lock
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("cannot release un-acquired lock")

    monkeypatch.setattr(cli, "cmd_scan", interrupted_inside_a_wait)
    assert cli.main(["scan", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "imgclf scan: interrupted\n"


def test_sigterm_stops_a_command_as_ctrl_c_does_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    import signal
    import time

    from imgclf import cli
    from imgclf.files import atomic_path

    (tmp_path / "out").mkdir()

    def killed_while_writing(args):  # `kill`, `timeout` or a scheduler's time limit, half-way through a file
        with atomic_path(tmp_path / "out" / "predictions.csv") as tmp:
            tmp.write_text("path,label\n")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

    monkeypatch.setattr(cli, "cmd_predict", killed_while_writing)
    monkeypatch.setattr(cli, "cmd_train", killed_while_writing)
    assert cli.main(["predict", "RUN", str(tmp_path)]) == 143
    assert capsys.readouterr().err == "imgclf predict: stopped by SIGTERM\n"
    assert list((tmp_path / "out").iterdir()) == []
    assert cli.main(["train", str(tmp_path), "--out", str(tmp_path / "run")]) == 143
    assert capsys.readouterr().err.endswith("stopped by SIGTERM (the same command with --resume continues from the "
                                            "last finished epoch)\n")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler lasts as long as the command


@pytest.mark.parametrize("command", [["predict", "RUN", "a.png", "--batch-size", "0"],
                                     ["predict", "RUN", "a.png", "--max-pixels", "-5"],
                                     ["augment-preview", "DATA", "--n", "0"],
                                     ["augment-preview", "DATA", "--versions", "x"],
                                     ["augment-preview", "DATA", "--zoom", "0"]])
def test_counts_below_1_are_usage_errors_naming_the_flag(command, capsys):
    from imgclf.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"imgclf {command[0]}: error: argument {command[-2]}: expected a whole number of at least "
                            "1 (") and error.endswith(f"Received: '{command[-1]}'")


@pytest.mark.parametrize("command, received", [
    (["scan", "DATA", "--val", "0.5", "--test", "0.5"], "--val 0.5 and --test 0.5"),
    (["audit", "DATA", "--val", "0.9"], "--val 0.9 and --test 0.15"),
    (["train", "DATA", "--out", "RUN", "--test", "0.85"], "--val 0.15 and --test 0.85"),
    (["augment-preview", "DATA", "--val", "0.3", "--test", "0.7"], "--val 0.3 and --test 0.7")])
def test_val_and_test_adding_up_to_1_are_usage_errors(command, received, capsys):
    from imgclf.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"imgclf {command[0]}: error: argument --val/--test: val+test must be less than 1, so that some images are left "
        f"to train on. Received: {received}")


def test_a_resume_that_trains_nothing_says_the_model_is_unchanged_and_imgclf_warnings_are_one_line(
        image_folder, tmp_path, capsys):
    from imgclf.cli import main

    run = tmp_path / "run"
    train = ["train", str(image_folder), "--out", str(run), "--model", "mlp", "--hidden", "8", "--epochs", "1"]
    assert main(train) == 0
    assert f"model written to {run / 'model.keras'}" in capsys.readouterr().out
    assert main([*train, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to resume: all 1 epoch(s)" in out and f"model unchanged: {run / 'model.keras'}" in out
    for cached in (tmp_path / "xdg-cache").rglob("*.npy"):
        cached.write_bytes(cached.read_bytes()[:100])  # damaged: decoded again, with a warning
    assert main(["evaluate", str(run), "--no-report"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert warned and all(line.startswith("warning: The decoded-image cache ") for line in warned)


def _file_size_limit(limit_bytes):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_a_write_stopped_by_a_file_size_limit_names_the_file_and_ulimit(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "imgclf", "train", str(data), "--model", "mlp", "--epochs", "1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=_file_size_limit(4096))
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"imgclf train: error: {tmp_path}/"), error
    assert error.endswith("File too large (a limit on the size of files stopped the write: see `ulimit -f`)"), error


def test_a_relative_path_from_a_deleted_current_folder_says_so(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    command = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m imgclf scan data'
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "imgclf scan: note: the current folder no longer exists: cd into one that does, or give absolute paths")


def test_the_next_command_quotes_a_run_path_the_shell_would_split(tmp_path, image_folder, capsys):
    from imgclf.cli import main

    out = tmp_path / "my runs" / "first try"
    assert main(["train", str(image_folder), "--model", "mlp", "--epochs", "1", "--out", str(out)]) == 0
    assert f"next: imgclf evaluate '{out}' --split " in capsys.readouterr().out


def test_a_cache_folder_that_cannot_be_made_is_named_as_the_image_cache(tmp_path, image_folder, capsys, monkeypatch):
    from imgclf.cli import main

    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    assert main(["train", str(image_folder), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "run")]) == 1
    assert (f"error: The folder of the decoded-image cache, {tmp_path}/afile/imgclf, cannot be made: Not a directory. "
            "It is data.cache_dir of a --config file where one sets it, else $XDG_CACHE_HOME/imgclf (~/.cache/imgclf "
            "by default): choose a folder that can be written.") in capsys.readouterr().err
