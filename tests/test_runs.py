import pytest

from imgclf.files import write_json
from imgclf.runs import RunDir, RunError


def test_start_refuses_a_finished_run(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"x")
    with pytest.raises(RunError, match="--overwrite"):
        RunDir(tmp_path).start()
    RunDir(tmp_path).start(overwrite=True)
    assert not (tmp_path / "model.keras").exists()


def test_start_refuses_a_stopped_run_and_overwrite_removes_only_run_files(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.checkpoints / "state.json", {"epoch": 2})
    write_json(run.eval_dir("test") / "metrics.json", {})
    (tmp_path / "history.csv").write_text("epoch\n0\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="stopped after 3 epoch.*--resume"):
        run.start()
    run.start(overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_lock_refuses_a_second_holder(tmp_path):
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(RunError, match="in use"):
            with RunDir(tmp_path).lock():
                pass


def test_missing_run_names_the_command_to_make_it(tmp_path):
    with pytest.raises(RunError, match="imgclf train"):
        RunDir(tmp_path / "none").classes()
