import csv
import json
import os

import numpy as np
import pytest

import imgclf
from conftest import make_class_folder


def read_history(run):
    with open(run.history_path) as handle:
        return list(csv.DictReader(handle))


def test_killed_run_resumes_at_the_next_epoch(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    manifest = imgclf.scan(data, progress=False)
    run = imgclf.train(manifest, model="mlp", hidden=(32,), epochs=2, out=tmp_path / "run", verbose=0, progress=False)
    state = json.loads((run.checkpoints / "state.json").read_text())
    assert state["epoch"] == 1
    # A run killed after its second epoch has exactly these files; resuming asks for 4 epochs in all.
    (run.model_path).unlink()
    run = imgclf.train(manifest, model="mlp", hidden=(32,), epochs=4, out=run.path, resume=True, verbose=0, progress=False)
    history = read_history(run)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]
    assert json.loads((run.checkpoints / "state.json").read_text())["epoch"] == 3
    assert run.model_path.exists()


def test_models_take_raw_uint8_images(tmp_path, image_folder):
    run = imgclf.train(image_folder, model="small_cnn", epochs=1, batch_size=8, out=tmp_path / "run",
                       augment="standard", verbose=0, progress=False)
    model = run.load_model()
    assert model.input_shape == (None, 16, 16, 3)
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert "Rescaling" in [layer.__class__.__name__ for layer in model.layers]


def test_config_records_automatic_choices(tmp_path, image_folder):
    run = imgclf.train(image_folder, model="mlp", epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    cfg = run.config()
    assert cfg.data.image_size == (16, 16)
    assert cfg.data.color_mode == "rgb"
    env = json.loads(run.environment_path.read_text())
    assert env["data_hash"] == imgclf.scan(image_folder, progress=False).data_hash
    assert env["versions"]["tensorflow"]


@pytest.mark.slow
def test_cnn_learns_the_tiny_classes(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=40)
    run = imgclf.train(data, model="cnn", epochs=12, out=tmp_path / "run", verbose=0, progress=False)
    evaluation = imgclf.evaluate(run, "test", progress=False)
    assert evaluation.error_rate < 0.15


@pytest.mark.slow
def test_digits_demo_error_rate_is_well_under_ten_percent(tmp_path):
    from datasets import digits

    digits.build(tmp_path / "digits")
    run = imgclf.train(tmp_path / "digits", model="cnn", epochs=20, out=tmp_path / "run", verbose=0, progress=False)
    evaluation = imgclf.evaluate(run, "test", progress=False)
    assert len(evaluation.y_true) > 200
    assert evaluation.error_rate < 0.10


@pytest.mark.slow
def test_small_cnn_generalises_after_a_few_epochs(tmp_path):
    # Batch-norm statistics must settle within the few steps a small folder gives (40 a epoch here),
    # or validation accuracy stays at chance while training accuracy climbs.
    from datasets import digits

    digits.build(tmp_path / "digits")
    run = imgclf.train(tmp_path / "digits", model="small_cnn", epochs=3, out=tmp_path / "run", verbose=0,
                       progress=False)
    history = read_history(run)
    assert float(history[-1]["val_accuracy"]) > 0.85
    assert imgclf.evaluate(run, "test", progress=False).error_rate < 0.15


def test_resume_keeps_the_runs_own_settings_and_refuses_changes(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    run = imgclf.train(data, model="mlp", hidden=(24,), epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    run.model_path.unlink()  # as if killed after the first epoch
    run = imgclf.train(data, epochs=2, out=run.path, resume=True, verbose=0, progress=False)
    cfg = run.config()
    assert (cfg.model.name, cfg.model.hidden, cfg.train.epochs) == ("mlp", (24,), 2)
    assert [int(row["epoch"]) for row in read_history(run)] == [0, 1]

    with pytest.raises(imgclf.runs.RunError, match=r"model\.name='cnn': the run was started with model\.name='mlp'"):
        imgclf.train(data, model="cnn", epochs=3, out=run.path, resume=True, verbose=0, progress=False)
    # The checkpoint's optimizer and its best epoch belong to the run's optimizer and monitor.
    for change, message in (({"optimizer": "sgd", "momentum": 0.5}, r"train\.optimizer='sgd'"),
                            ({"monitor": "val_accuracy"}, r"train\.monitor='val_accuracy': the run was started with "
                                                          r"train\.monitor='val_loss'"),
                            ({"weight_decay": 0.01}, r"train\.weight_decay=0\.01")):
        with pytest.raises(imgclf.runs.RunError, match=message):
            imgclf.train(data, epochs=3, out=run.path, resume=True, verbose=0, progress=False, **change)
    with pytest.raises(ValueError, match="resume and overwrite contradict each other"):
        imgclf.train(data, epochs=3, out=run.path, resume=True, overwrite=True, verbose=0, progress=False)
    make_class_folder(data, per_class=2, start=50)  # new images change the data
    with pytest.raises(imgclf.runs.RunError, match="images, labels or splits changed"):
        imgclf.train(data, epochs=3, out=run.path, resume=True, verbose=0, progress=False)


def test_resuming_a_finished_run_removes_the_evaluations_of_its_previous_model(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=10)
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    imgclf.report(run, imgclf.evaluate(run, split="test", progress=False))
    assert (run.path / "eval" / "test" / "metrics.json").exists() and (run.path / "report.html").exists()
    imgclf.train(data, out=run.path, resume=True, verbose=1, progress=False)  # nothing to resume: the same model
    assert "removed" not in capsys.readouterr().out and (run.path / "eval" / "test" / "metrics.json").exists()
    imgclf.export(run, format="keras", progress=False)  # kept: the only copy of the earlier model
    imgclf.train(data, epochs=3, out=run.path, resume=True, verbose=1, progress=False)  # a new model.keras
    shown = capsys.readouterr().out
    assert "removed eval/ and report.html of the previous model.keras" in shown
    assert not (run.path / "eval").exists() and not (run.path / "report.html").exists()
    assert (f"{run.path / 'export'} still holds the exports of the previous model.keras: `imgclf export {run.path}` "
            "replaces them") in shown and (run.path / "export" / "keras" / "model.keras").exists()
    imgclf.train(data, epochs=1, out=run.path, overwrite=True, verbose=0, progress=False)
    assert not (run.path / "export").exists()  # --overwrite starts again: nothing of the earlier run stays


def test_history_row_of_an_unfinished_epoch_is_replaced_on_resume(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    run = imgclf.train(data, model="mlp", hidden=(16,), epochs=2, out=tmp_path / "run", verbose=0, progress=False)
    # Killed after history.csv got the row of epoch 1 but before state.json recorded that epoch as finished.
    state = json.loads((run.checkpoints / "state.json").read_text())
    (run.checkpoints / "state.json").write_text(json.dumps({**state, "epoch": 0}))
    run.model_path.unlink()
    run = imgclf.train(data, epochs=3, out=run.path, resume=True, verbose=0, progress=False)
    history = read_history(run)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    assert list(history[0]) == ["epoch", "phase", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    assert {row["phase"] for row in history} == {"train"}
    assert all(float(row["loss"]) > 0 for row in history)


def test_resume_and_overwrite_remove_temporary_files_that_killed_writes_left(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    leftovers = [run.path / ".model.0123abcd.tmp.keras", run.path / ".report.89abcdef.tmp.html",
                 run.checkpoints / ".last.00ff00ff.tmp.keras"]
    mine = [run.path / "notes.tmp", run.path / ".notes.txt"]
    for path in leftovers + mine:
        path.write_bytes(b"x")
    run.model_path.unlink()  # as if killed after the first epoch
    imgclf.train(data, epochs=2, out=run.path, resume=True, verbose=0, progress=False)
    assert [p.exists() for p in leftovers + mine] == [False, False, False, True, True]
    leftovers[0].write_bytes(b"x")
    imgclf.train(data, model="mlp", hidden=(8,), epochs=1, out=run.path, overwrite=True, verbose=0, progress=False)
    assert not leftovers[0].exists() and all(p.exists() for p in mine)


def test_training_leaves_the_callers_random_generators_as_they_were(tmp_path):
    import random

    import tensorflow as tf

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    tensorflow_seed = tf.compat.v1.get_seed(None)[0]
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), float(np.random.rand()))
    random.seed(123)
    np.random.seed(123)
    imgclf.train(data, model="mlp", hidden=(8,), epochs=1, seed=0, out=tmp_path / "run", verbose=0, progress=False)
    assert (random.random(), float(np.random.rand())) == expected  # not the draws of seed 0
    assert tf.compat.v1.get_seed(None)[0] == tensorflow_seed


def test_the_first_training_of_a_process_leaves_pythons_generator_as_it_was(tmp_path):
    """Importing Keras the first time draws from Python's generator: in a new process, not here, where it is."""
    import subprocess
    import sys

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    script = f"""
import random
import imgclf
random.seed(5)
expected = random.random()
random.seed(5)
imgclf.train({str(data)!r}, model="mlp", hidden=(8,), epochs=1, out={str(tmp_path / "run")!r}, verbose=0,
             progress=False)
print(random.random() == expected)
"""
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert shown.stdout.strip() == "True", shown.stderr[-2000:]


def test_training_and_evaluating_several_models_in_one_process_does_not_warn_of_retracing(tmp_path):
    """A fresh process: TensorFlow counts traces per process, and warns at most twice per traced function."""
    import subprocess
    import sys

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    script = f"""
import imgclf
for number in range(3):
    run = {str(tmp_path)!r} + f"/run{{number}}"
    imgclf.train({str(data)!r}, model="mlp", hidden=(8,), epochs=2, out=run, verbose=0, progress=False)
    for _ in range(2):
        imgclf.evaluate(run, "val", progress=False)
print("done")
"""
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert shown.stdout.strip() == "done", shown.stderr[-2000:]
    assert "retracing" not in shown.stderr


def test_tensorflows_retracing_warning_is_held_back_only_within_imgclfs_own_steps():
    import logging

    from imgclf.tracing import retracing_expected

    class Shown(logging.Handler):
        messages: list = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    warning = "5 out of the last 5 calls to <function f> triggered tf.function retracing."
    logger, shown = logging.getLogger("tensorflow"), Shown()
    logger.addHandler(shown)
    try:
        with retracing_expected():
            logger.warning(warning)
            logger.warning("another warning")
        logger.warning(warning)
    finally:
        logger.removeHandler(shown)
    assert shown.messages == ["another warning", warning]


def test_a_picture_in_two_splits_as_files_of_other_bytes_is_noted_when_training(tmp_path, capsys):
    from PIL import Image

    make_class_folder(tmp_path / "data" / "train", per_class=8, classes=["circle", "square"])
    make_class_folder(tmp_path / "data" / "test", per_class=2, classes=["circle", "square"], start=50)
    learned = tmp_path / "data" / "train" / "circle" / "circle_003.png"
    Image.open(learned).save(tmp_path / "data" / "test" / "circle" / "again.bmp")  # the same pixels, other bytes
    imgclf.train(tmp_path / "data", model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=1,
                 progress=False)
    shown = capsys.readouterr().out
    # The first file is train's or val's (val is carved out of train/ by the content hashes).
    assert ("note: 1 picture(s) are in more than one split, in files with other bytes (the same pixels at 16x16; e.g. "
            f"{learned} and {tmp_path / 'data' / 'test' / 'circle' / 'again.bmp'}): their results flatter the model. "
            "`imgclf audit` lists every copy; keep one file of each") in shown


def test_a_manifest_edited_in_python_is_checked_and_described_as_a_scan_would_be(tmp_path, capsys):
    import dataclasses

    from imgclf.manifest import DatasetError, Entry, Manifest

    data = make_class_folder(tmp_path / "data", per_class=8, classes=["circle", "square"])
    scanned = imgclf.scan(data, progress=False)
    edited = dataclasses.replace(scanned, entries=[dataclasses.replace(e) for e in scanned.entries])
    val = next(entry for entry in edited.entries if entry.split == "val")
    val.split = "Val"
    with pytest.raises(DatasetError, match=rf"{val.path}: its split is 'Val', but a usable image's split is one of "
                                           r"train, val, test \(lower case\)\. Set it, or remove the entry"):
        imgclf.train(edited, model="mlp", epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    val.split, val.label = "val", ""
    with pytest.raises(DatasetError, match=r"its label is '', but a usable image's label is a class name"):
        imgclf.train(edited, model="mlp", epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    for entry in edited.entries:  # the held-out circles become a class of their own, never trained on
        if entry.label in ("circle", "") and entry.split != "train":
            entry.label = "oval"
    imgclf.train(edited, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=1, progress=False)
    assert "note: 1 class(es) have no train images ('oval'): the model cannot learn them" in capsys.readouterr().out
    # A manifest built by hand, without hashes or sizes: hashed and measured as a scan would.
    built = Manifest(entries=[Entry(path=entry.path, label=entry.label, split=entry.split) for entry in scanned.entries],
                     root=str(data))
    run = imgclf.train(built, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "built", verbose=0, progress=False)
    assert run.config().data.image_size == (16, 16)


def test_an_overwrite_refused_after_the_scan_leaves_the_earlier_run_as_it_was(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    crop = tmp_path / "crop.yaml"  # the images' size (16x16) is known only after the scan
    crop.write_text("transform:\n  __class_fullname__: Compose\n  transforms:\n"
                    "  - __class_fullname__: RandomCrop\n    height: 8\n    width: 8\n    p: 1.0\n")
    with pytest.raises(ValueError, match="RandomCrop"):
        imgclf.train(data, model="mlp", hidden=(8,), epochs=1, augment=str(crop), out=run.path, overwrite=True,
                     verbose=0, progress=False)
    assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == before
    assert run.model_path.exists()


def test_a_manifest_whose_files_are_gone_is_named_as_such_and_left_as_it_was(tmp_path):
    import shutil

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    manifest = imgclf.scan(data, progress=False)
    usable = len(manifest.usable)
    shutil.move(data, tmp_path / "away")  # a share that dropped out
    with pytest.raises(ValueError, match=r"None of the \d+ images of the train split could be decoded \(unreadable "):
        imgclf.train(manifest, model="mlp", hidden=(8,), epochs=1, cache_dir=str(tmp_path / "cache"),
                     out=tmp_path / "run", verbose=0, progress=False)
    assert len(manifest.usable) == usable
    shutil.move(tmp_path / "away", data)  # back again: the same manifest trains
    run = imgclf.train(manifest, model="mlp", hidden=(8,), epochs=1, cache_dir=str(tmp_path / "cache"),
                       out=tmp_path / "run", verbose=0, progress=False)
    assert run.model_path.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_a_finished_run_and_its_evaluation_hold_no_cache_file_open(tmp_path):
    import gc

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    cache = tmp_path / "cache"
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, cache_dir=str(cache), out=tmp_path / "run",
                       verbose=0, progress=False)
    imgclf.evaluate(run, progress=False)
    gc.collect()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    assert [path for path in held if path.startswith(str(cache))] == []


def test_the_course_cnn_needs_6_pixels_a_side_and_says_so():
    from imgclf.config import ImageSpec, ModelConfig
    from imgclf.models import build_model

    with pytest.raises(ValueError, match=r"cnn needs images of at least 6x6 pixels. Received: image_size=\(5, 20\)"):
        build_model(ModelConfig(name="cnn"), ImageSpec(5, 20, 3), 2)
    model = build_model(ModelConfig(name="cnn"), ImageSpec(6, 6, 3), 2)
    assert model.predict(np.zeros((1, 6, 6, 3), np.uint8), verbose=0).shape == (1, 2)


def test_each_fit_traces_its_train_step_once_fresh_or_resumed(tmp_path, monkeypatch):
    # Outside a strategy Keras builds the optimizer and metrics inside the first trace, and TensorFlow then
    # traces the step again: seconds before the first batch, tens of seconds for a backbone.
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    traces = []
    step = TensorFlowTrainer.train_step
    monkeypatch.setattr(TensorFlowTrainer, "train_step", lambda self, data: traces.append(1) or step(self, data))
    data = make_class_folder(tmp_path / "data", per_class=6)
    options = dict(model="mlp", hidden=(16,), batch_size=8, verbose=0, progress=False)
    run = imgclf.train(data, epochs=2, out=tmp_path / "run", **options)
    assert len(traces) == 1
    run.model_path.unlink()  # as a run killed after its second epoch leaves it
    imgclf.train(data, epochs=3, out=run.path, resume=True, **options)
    assert len(traces) == 2


def test_a_file_rewritten_between_scan_and_train_is_trained_on_as_it_is_now_and_poisons_no_cache(tmp_path, capsys):
    import hashlib
    import shutil

    from PIL import Image

    from imgclf.config import DataConfig, ImageSpec
    from imgclf.images import load_image
    from imgclf.pipeline import load_split

    original = make_class_folder(tmp_path / "original", per_class=6)
    shutil.copytree(original, tmp_path / "copy")
    manifest = imgclf.scan(tmp_path / "copy", progress=False)
    rewritten = next(e for e in manifest.split("train") if e.label == "circle").path
    Image.new("RGB", (16, 16), (255, 0, 0)).save(rewritten)  # the picture replaced after the scan
    run = imgclf.train(manifest, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=1, progress=False)
    printed = capsys.readouterr().out
    assert "1 file(s) changed since the scan and were hashed again: 1 with other content" in printed
    recorded = {e.path: e.sha1 for e in run.manifest().entries}
    with open(rewritten, "rb") as handle:
        assert recorded[rewritten] == hashlib.sha1(handle.read()).hexdigest()
    # The folder that still holds the old picture gets its own pixels, not the rewritten file's.
    other = imgclf.scan(original, progress=False)
    spec = ImageSpec(16, 16, 3)
    images = load_split(other, "train", other.classes, spec, data=DataConfig(), progress=False)
    for entry, pixels in zip(other.split("train"), images.images):
        assert np.array_equal(pixels, load_image(entry.path, size=(16, 16))), entry.path
