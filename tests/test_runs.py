import pytest

from imgclf.files import write_json
from imgclf.runs import RunDir, RunError


def test_start_refuses_a_finished_run(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"x")
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(RunError, match="--overwrite"):
        RunDir(tmp_path).start()
    RunDir(tmp_path).start(overwrite=True)
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "config.yaml").exists()


def test_start_refuses_a_stopped_run_and_overwrite_removes_only_run_files(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.checkpoints / "state.json", {"epoch": 2})
    write_json(run.eval_dir("test") / "metrics.json", {})
    write_json(tmp_path / "export" / "keras" / "export.json", {})  # made from the model this run replaces
    (tmp_path / "history.csv").write_text("epoch\n0\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="stopped after 3 epoch.*--resume"):
        run.start()
    run.start(overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_that_is_not_a_run_keeps_its_files(tmp_path):
    (tmp_path / "config.yaml").write_text("mine: 1\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "script.py").write_text("print('mine')\n")
    for overwrite in (False, True):
        with pytest.raises(RunError, match=r"is not an imgclf run but holds config.yaml, eval/.*another --out"):
            RunDir(tmp_path).start(overwrite=overwrite)
    assert (tmp_path / "config.yaml").read_text() == "mine: 1\n" and (tmp_path / "eval" / "script.py").exists()
    (tmp_path / "notes").mkdir()
    RunDir(tmp_path / "notes").start()  # other files beside a new run are fine
    (tmp_path / "notes" / "todo.txt").write_text("x")
    RunDir(tmp_path / "notes").start()


def test_a_file_as_the_run_folder_is_named(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(RunError, match=r"run is a file, not a folder"):
        with RunDir(tmp_path / "run").lock():
            pass


def test_lock_refuses_a_second_holder(tmp_path):
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(RunError, match="in use"):
            with RunDir(tmp_path).lock():
                pass


def test_a_run_refused_before_it_wrote_leaves_no_lock_file_or_folder(tmp_path):
    with RunDir(tmp_path / "new").lock():
        pass  # refused: nothing written
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with RunDir(tmp_path / "empty").lock():
        pass
    assert (tmp_path / "empty").is_dir() and list((tmp_path / "empty").iterdir()) == []
    with RunDir(tmp_path / "used").lock():
        (tmp_path / "used" / "config.yaml").write_text("x")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == [".lock", "config.yaml"]


def test_a_run_being_trained_is_named_in_use_not_stopped(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.checkpoints / "state.json", {"epoch": 2})
    with run.lock():
        with pytest.raises(RunError, match="in use by another imgclf process"):
            RunDir(tmp_path).check_start()
        with pytest.raises(RunError, match="stopped after 3 epoch"):
            run.start()  # the holder of the lock is not stopped by it
    with pytest.raises(RunError, match="stopped after 3 epoch"):
        RunDir(tmp_path).check_start()


def test_a_folder_named_like_the_lock_file_is_named_before_the_scan(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(RunError, match=r"\.lock is a folder, where imgclf keeps the lock file of a run"):
        RunDir(tmp_path).check_start()


def test_missing_run_names_the_command_to_make_it(tmp_path):
    with pytest.raises(RunError, match="imgclf train"):
        RunDir(tmp_path / "none").classes()


@pytest.mark.parametrize("text, problem", [
    ('["a","b",', "is not valid JSON (Expecting value: line 1 column 10 (char 9)); it should hold the run's class "
                  'names, e.g. ["cat", "dog"].'),
    ('{"a": 0}', 'should hold a list of class names, e.g. ["cat", "dog"]; it holds {"a": 0}.'),
    ('["a", 1]', 'should hold a list of class names, e.g. ["cat", "dog"]; it holds ["a", 1].'),
    ('["a", "b", "a"]', "names ['a'] more than once; each class has one output of the model."),
], ids=["not_json", "not_a_list", "not_text", "repeated"])
def test_a_damaged_classes_json_is_named_with_the_fix(tmp_path, text, problem):
    (tmp_path / "classes.json").write_text(text)
    with pytest.raises(RunError) as raised:
        RunDir(tmp_path).classes()
    assert str(raised.value) == (f"{tmp_path / 'classes.json'} {problem} "
                                 "Restore it from a copy of the run, or train the run again.")


def _tiny_model_file(path):
    import keras

    inputs = keras.Input((4, 4, 1), dtype="uint8")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    keras.Model(inputs, outputs).save(path)


def test_a_cut_short_or_empty_model_keras_is_named_as_damaged_and_a_missing_one_as_missing(tmp_path):
    run = RunDir(tmp_path)
    _tiny_model_file(run.model_path)
    whole = run.model_path.read_bytes()
    assert run.load_model().output_shape == (None, 3)
    fix = "Train the run again, or copy model.keras again from where the run was trained."
    for damaged, reason in ((whole[:3000], "3,000 bytes that are not a zip archive: cut short?"), (b"", "it is empty")):
        run.model_path.write_bytes(damaged)
        with pytest.raises(RunError) as raised:
            run.load_model()
        assert str(raised.value) == f"{run.model_path} is damaged: it is not a valid .keras file ({reason}). {fix}"
    run.model_path.unlink()
    with pytest.raises(RunError, match=r"has no model\.keras; it is not a finished run"):
        run.load_model()


def test_a_model_and_classes_json_of_different_lengths_are_refused(tmp_path):
    run = RunDir(tmp_path)
    _tiny_model_file(run.model_path)
    run.write_classes(["a", "b", "c"])
    model, classes = run.load_model_and_classes()
    assert classes == ["a", "b", "c"] and model.output_shape == (None, 3)
    run.write_classes(["a", "b", "c", "d"])
    with pytest.raises(RunError) as raised:
        run.load_model_and_classes()
    assert str(raised.value) == (f"{run.model_path} predicts 3 classes but {run.classes_path} names 4. "
                                 "The run directory is inconsistent; train it again.")


def test_a_manifest_with_classes_that_classes_json_does_not_name_is_refused(tmp_path):
    from imgclf.manifest import Entry, Manifest

    run = RunDir(tmp_path)
    Manifest([Entry(path=f"/data/{label}/1.png", label=label, split="test") for label in ("a", "b")]).to_csv(run.manifest_path)
    assert [e.label for e in run.manifest(["a", "b"]).entries] == ["a", "b"]
    with pytest.raises(RunError) as raised:
        run.manifest(["a", "x"])
    assert str(raised.value) == (f"{run.manifest_path} lists images of ['b'], which {run.classes_path} does not name "
                                 "(it names ['a', 'x']). The run directory is inconsistent; train it again.")


def test_images_of_a_split_that_all_are_gone_name_the_moved_folder(tmp_path):
    from imgclf.manifest import Entry

    run = RunDir(tmp_path)
    (tmp_path / "kept.png").write_bytes(b"x")
    gone = [Entry(path=str(tmp_path / "data" / f"{i}.png"), label="a", split="test") for i in range(3)]
    with pytest.raises(RunError) as raised:
        run.check_images_exist("test", gone, "Move it back.")
    assert str(raised.value) == (f"None of the 3 test images listed in {run.manifest_path} exist (e.g. {gone[0].path}): "
                                 "the data folder may have moved, or been deleted, since the run was trained. Move it back.")
    run.check_images_exist("test", [*gone, Entry(path=str(tmp_path / "kept.png"), label="a", split="test")], "")
    run.check_images_exist("test", [], "")


def test_a_run_path_that_is_a_file_or_below_one_is_named_as_such(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunError, match=r"notes.txt is a file, not a run folder. Pass the folder `imgclf train DATA "
                                       r"--out RUN` wrote."):
        RunDir(tmp_path / "notes.txt").require("model.keras")
    with pytest.raises(RunError, match=r"notes.txt/run is inside .*notes.txt, which is a file, not a folder. Choose "
                                       r"another --out"):
        RunDir(tmp_path / "notes.txt" / "run").check_start()


def test_a_run_whose_training_stopped_says_how_far_it_got_and_how_to_continue_it(tmp_path):
    from imgclf.config import Config, TrainConfig

    run = RunDir(tmp_path / "run")
    run.write_config(Config(train=TrainConfig(epochs=30)))
    write_json(run.checkpoints / "state.json", {"epoch": 2})
    expected = (f"{run.path} has no model.keras yet: its training stopped after epoch 3 of 30. Continue it with "
                f"`imgclf train DATA --out {run.path} --resume`, DATA being the folder it was trained on.")
    with pytest.raises(RunError) as raised:
        run.load_model()
    assert str(raised.value) == expected
    assert run.unfinished() == expected.split("yet: ")[1]
    with run.lock():  # as a training process holds it (flock: another open file conflicts, in this process too)
        with pytest.raises(RunError, match=r"no model.keras yet: another imgclf process is training it now \(3 "
                                           r"epoch\(s\) of 30 done so far\); wait for it to finish$"):
            run.load_model()
    _tiny_model_file(run.model_path)
    assert run.unfinished() is None


def test_a_run_training_its_first_epoch_is_named_as_such(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        write_json(run.environment_path, {})
        assert run.in_use()
        with pytest.raises(RunError, match=r"another imgclf process is training it now \(0 epoch\(s\) done so far"):
            run.require("model.keras")
    assert not run.in_use() and run.unfinished() is None


def test_a_run_on_a_file_system_without_locks_is_not_taken_for_one_in_use(tmp_path, monkeypatch):
    import errno
    import fcntl

    run = RunDir(tmp_path / "run")
    with run.lock():
        write_json(run.environment_path, {})

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert not run.in_use()


def test_a_run_stopped_before_its_first_epoch_ended_is_started_again_without_its_tensorboard_file(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.environment_path, {})
    stale = tmp_path / "tensorboard" / "train" / "events.out.tfevents.1.host"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an attempt that never finished an epoch")
    (tmp_path / "notes.txt").write_text("mine")
    run.start()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("text", ["[1, 2]", '{"phase": "train"}', '{"epoch": "2"}'])
def test_a_state_json_edited_into_something_else_is_named_with_the_fix(tmp_path, text):
    run = RunDir(tmp_path)
    run.checkpoints.mkdir(parents=True)
    (run.checkpoints / "state.json").write_text(text)
    with pytest.raises(RunError, match=r"state.json does not hold what imgclf writes there .* Pass --overwrite"):
        run.start()
    assert run.unfinished() is None
