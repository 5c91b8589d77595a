import pytest

from imgclf.runs import RunDir, RunError, atomic_path, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_create_refuses_a_finished_run(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"x")
    with pytest.raises(RunError, match="--overwrite"):
        RunDir.create(tmp_path)
    assert RunDir.create(tmp_path, overwrite=True).path == tmp_path


def test_lock_refuses_a_second_holder(tmp_path):
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(RunError, match="in use"):
            with RunDir(tmp_path).lock():
                pass


def test_missing_run_names_the_command_to_make_it(tmp_path):
    with pytest.raises(RunError, match="imgclf train"):
        RunDir(tmp_path / "none").classes()
