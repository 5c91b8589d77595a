"""Training controls: schedules, label smoothing, weight decay, momentum, monitors, samplers, progress, TensorBoard."""

import csv
import json
import math

import keras
import numpy as np
import pytest

import imgclf
from conftest import make_class_folder
from imgclf.config import ConfigError, TrainConfig
from imgclf.phases import Phase
from imgclf.pipeline import ImageBatches, SplitImages
from imgclf.progress import epoch_line
from imgclf.sampling import balanced_order
from imgclf.prediction import load_keras_model
from imgclf.schedules import learning_rate_at
from imgclf.runs import RunError
from imgclf.training import TrainingDivergedError

TINY = dict(model="mlp", hidden=(16,), batch_size=8, verbose=0, progress=False)


def read_history(run):
    with open(run.history_path) as handle:
        return list(csv.DictReader(handle))


def rates(run):
    return [float(row["learning_rate"]) for row in read_history(run)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("options") / "data", per_class=10)


def test_constant_schedule_keeps_the_learning_rate(tmp_path, data):
    run = imgclf.train(data, epochs=3, learning_rate=0.01, schedule="constant", out=tmp_path / "run", **TINY)
    assert rates(run) == [0.01, 0.01, 0.01]


def test_cosine_schedule_warms_up_linearly_then_decays(tmp_path, data):
    run = imgclf.train(data, epochs=6, learning_rate=0.01, schedule="cosine", warmup_epochs=2, out=tmp_path / "run",
                       **TINY)
    # Warm-up epoch i of W=2: lr * (i + 1) / 3; then lr * (1 + cos(pi * (i - 2) / 4)) / 2.
    expected = [0.01 / 3, 0.02 / 3] + [0.01 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    np.testing.assert_allclose(rates(run), expected, rtol=1e-5)
    assert run.config().train.schedule == "cosine"


def test_step_schedule_multiplies_by_the_factor_every_n_epochs(tmp_path, data):
    run = imgclf.train(data, epochs=5, learning_rate=0.01, schedule="step", lr_step_epochs=2, lr_factor=0.5,
                       out=tmp_path / "run", **TINY)
    np.testing.assert_allclose(rates(run), [0.01, 0.01, 0.005, 0.005, 0.0025], rtol=1e-5)


def test_schedules_start_from_each_phases_learning_rate():
    train = TrainConfig(epochs=6, schedule="step", lr_step_epochs=1, lr_factor=0.5)
    fine_tune = Phase("fine_tune", 2, 6, 1e-4, "all")
    assert [learning_rate_at(train, fine_tune, epoch) for epoch in range(2, 6)] == pytest.approx(
        [1e-4, 5e-5, 2.5e-5, 1.25e-5])


def test_plateau_schedule_lowers_the_rate_after_patience_epochs_without_improvement(tmp_path, data):
    run = imgclf.train(data, epochs=6, learning_rate=0.01, schedule="plateau", lr_patience=1, lr_factor=0.5,
                       monitor="val_accuracy", out=tmp_path / "run", **TINY)
    history = read_history(run)
    best, wait, rate = -1.0, 0, 0.01
    for row in history:  # what ReduceLROnPlateau documents, replayed on the run's own val_accuracy
        assert float(row["learning_rate"]) == pytest.approx(rate, rel=1e-5)
        value = float(row["val_accuracy"])
        if value > best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= 1:
                rate, wait = rate * 0.5, 0
    assert len(set(rates(run))) > 1  # the data plateaus within 6 epochs, so the rate was lowered
    state = json.loads((run.checkpoints / "state.json").read_text())
    assert set(state["callbacks"]["schedule"]) == {"wait", "best", "cooldown_counter"}


@pytest.mark.parametrize("first", ["constant", "cosine"])
def test_a_run_resumed_with_a_constant_rate_trains_at_the_rate_it_is_given(tmp_path, data, first):
    run = imgclf.train(data, epochs=2, learning_rate=0.001, schedule=first, out=tmp_path / "run", **TINY)
    imgclf.train(data, epochs=4, learning_rate=0.01, schedule="constant", out=run.path, resume=True, **TINY)
    assert rates(run)[2:] == [0.01, 0.01]
    assert run.config().train.learning_rate == 0.01


def test_a_resumed_plateau_run_says_the_rate_it_resumes_at(tmp_path, data, capsys):
    options = dict(TINY, learning_rate=0.01, schedule="plateau", lr_patience=1, lr_factor=0.5, monitor="val_accuracy")
    run = imgclf.train(data, epochs=6, out=tmp_path / "run", **options)
    assert min(rates(run)) < 0.01
    imgclf.train(data, epochs=7, out=run.path, resume=True, **{**options, "verbose": 1})
    resumed_at = rates(run)[6]
    assert resumed_at < 0.01
    assert f"learning rate 0.01 (resuming at {resumed_at:g}), times 0.5 after 1 epoch(s)" in capsys.readouterr().out


@pytest.mark.parametrize("first", ["constant", "cosine"])
def test_a_run_resumed_under_plateau_starts_at_the_rate_it_is_given(tmp_path, data, capsys, first):
    """No plateau of this run lowered its rate: the checkpoint's rate is the other schedule's, not the plateaus'."""
    run = imgclf.train(data, epochs=2, learning_rate=0.001, schedule=first, out=tmp_path / "run", **TINY)
    imgclf.train(data, epochs=4, learning_rate=0.01, schedule="plateau", lr_patience=5, out=run.path, resume=True,
                 **{**TINY, "verbose": 1})
    assert rates(run)[2:] == [0.01, 0.01]
    assert "resuming at" not in capsys.readouterr().out


def test_a_plateau_run_resumed_at_its_own_rate_does_not_claim_a_lowered_one(tmp_path, data, capsys):
    options = dict(TINY, learning_rate=0.05, schedule="plateau", lr_patience=5)
    run = imgclf.train(data, epochs=1, out=tmp_path / "run", **options)
    imgclf.train(data, epochs=2, out=run.path, resume=True, **{**options, "verbose": 1})
    shown = capsys.readouterr().out
    assert "phase train: epochs 2-2 of 2, every layer trains, learning rate 0.05, times" in shown
    assert rates(run) == pytest.approx([0.05, 0.05])


def test_a_resume_that_trains_nothing_leaves_the_runs_config_as_it_was(tmp_path, data, capsys):
    run = imgclf.train(data, epochs=2, out=tmp_path / "run", **TINY)
    written = {name: (run.path / name).read_bytes() for name in ("config.yaml", "environment.json", "augment.yaml")}
    imgclf.train(data, out=run.path, resume=True, learning_rate=0.5, schedule="step", **{**TINY, "verbose": 1})
    assert "nothing to resume: all 2 epoch(s)" in capsys.readouterr().out
    assert {name: (run.path / name).read_bytes() for name in written} == written
    assert run.config().train.learning_rate == 0.001


def assert_same_history(resumed, uninterrupted):
    assert [(r["epoch"], r["phase"]) for r in resumed] == [(r["epoch"], r["phase"]) for r in uninterrupted]
    assert list(resumed[0]) == list(uninterrupted[0])
    for key in resumed[0]:
        if key not in ("epoch", "phase"):
            np.testing.assert_allclose([float(r[key]) for r in resumed], [float(r[key]) for r in uninterrupted],
                                       rtol=1e-4, atol=1e-6, err_msg=key)


def kill_after_epoch(monkeypatch, last: int):
    """Makes training stop like a killed process right after epoch `last` is saved."""
    save = imgclf.training.RunCheckpoint.on_epoch_end

    def save_then_die(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == last:
            raise KeyboardInterrupt

    monkeypatch.setattr(imgclf.training.RunCheckpoint, "on_epoch_end", save_then_die)


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_killed_run_with_a_schedule_resumes_to_the_uninterrupted_history(tmp_path, data, schedule, monkeypatch):
    options = dict(epochs=6, learning_rate=0.01, schedule=schedule, monitor="val_accuracy", lr_patience=1,
                   lr_factor=0.5, patience=3, **TINY)
    if schedule == "cosine":
        options.update(warmup_epochs=1, lr_patience=2)
    whole = imgclf.train(data, out=tmp_path / "whole", **options)
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            imgclf.train(data, out=tmp_path / "killed", **options)
    assert not (tmp_path / "killed" / "model.keras").exists()
    resumed = imgclf.train(data, out=tmp_path / "killed", resume=True, **options)
    assert_same_history(read_history(resumed), read_history(whole))
    assert (json.loads((resumed.checkpoints / "state.json").read_text())["callbacks"]
            == json.loads((whole.checkpoints / "state.json").read_text())["callbacks"])


def test_validation_macro_f1_is_logged_and_picks_the_best_epoch(tmp_path, data):
    run = imgclf.train(data, epochs=3, monitor="val_macro_f1", out=tmp_path / "run", **TINY)
    history = read_history(run)
    scores = [float(row["val_macro_f1"]) for row in history]
    assert all(0.0 <= s <= 1.0 for s in scores)
    state = json.loads((run.checkpoints / "state.json").read_text())
    assert state["monitor"] == "val_macro_f1" and state["best"] == pytest.approx(max(scores))


def test_validation_macro_f1_is_the_macro_f1_evaluate_reports_when_a_class_has_no_validation_image():
    from types import SimpleNamespace

    from imgclf.evaluation import evaluate_predictions
    from imgclf.monitoring import ValidationMacroF1

    labels = np.array([0, 0, 1, 1])  # class 2 has no validation image, and the model predicts it twice
    probabilities = np.eye(3)[[0, 2, 2, 1]] * 0.9 + 0.1 / 3

    class Predicting:
        def predict(self, batches, verbose=0):
            return probabilities

    callback = ValidationMacroF1(SimpleNamespace(labels=labels), batches=None)
    callback.set_model(Predicting())
    logs = {}
    callback.on_epoch_end(0, logs)
    reported = evaluate_predictions(labels, probabilities, ["a", "b", "c"]).metrics()["macro_f1"]
    assert logs["val_macro_f1"] == pytest.approx(reported, abs=1e-6) == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-6)


def test_early_stopping_on_accuracy_keeps_the_best_epochs_weights(tmp_path, data):
    run = imgclf.train(data, epochs=30, learning_rate=0.01, monitor="val_accuracy", patience=2, out=tmp_path / "run",
                       **TINY)
    history = read_history(run)
    accuracies = [float(row["val_accuracy"]) for row in history]
    assert len(history) < 30
    best_epoch = int(np.argmax(accuracies))  # the first epoch with the highest accuracy
    assert len(history) == best_epoch + 3
    model = run.load_model()
    best = keras.saving.load_model(run.checkpoints / "best.keras")
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_run_that_stopped_early_says_so_and_resuming_it_trains_nothing_unless_patience_grows(tmp_path, data,
                                                                                               capsys):
    options = dict(TINY, epochs=30, learning_rate=0.01, monitor="val_accuracy", patience=2, verbose=1)
    run = imgclf.train(data, out=tmp_path / "run", **options)
    epochs = len(read_history(run))
    assert epochs < 30
    assert f"phase train stopped early after epoch {epochs}: no better val_accuracy in 2 epoch(s)" in capsys.readouterr().out

    model_time = run.model_path.stat().st_mtime_ns
    imgclf.train(data, out=run.path, resume=True, **options)
    assert (f"nothing to resume in phase train: early stopping ends it after epoch {epochs} (2 epoch(s) without a "
            "better val_accuracy, patience 2); pass a larger --patience") in capsys.readouterr().out
    assert len(read_history(run)) == epochs and run.model_path.stat().st_mtime_ns == model_time

    imgclf.train(data, out=run.path, resume=True, **{**options, "patience": 4})
    assert len(read_history(run)) > epochs


def test_resuming_with_fewer_epochs_than_trained_or_another_class_weighting_is_refused(tmp_path, data):
    run = imgclf.train(data, epochs=3, out=tmp_path / "run", **TINY)
    config = run.config_path.read_text()
    with pytest.raises(RunError, match=r"epochs=2: it has trained 3 epoch\(s\) already.*--epochs 4 or more"):
        imgclf.train(data, epochs=2, out=run.path, resume=True, **TINY)
    with pytest.raises(RunError, match=r"train.class_weight=True: the run was started with train.class_weight=False"):
        imgclf.train(data, epochs=4, class_weight=True, out=run.path, resume=True, **TINY)
    with pytest.raises(RunError, match=r"train.sampler='balanced'"):
        imgclf.train(data, epochs=4, sampler="balanced", out=run.path, resume=True, **TINY)
    assert run.config_path.read_text() == config


def test_resuming_with_a_config_file_of_fewer_epochs_than_trained_keeps_the_runs_own(tmp_path, data, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  epochs: 2\n")
    run = imgclf.train(data, config=config, epochs=3, out=tmp_path / "run", **TINY)  # extended past the file's 2
    imgclf.train(data, config=config, out=run.path, resume=True, **{**TINY, "verbose": 1})
    assert "nothing to resume: all 3 epoch(s)" in capsys.readouterr().out
    assert imgclf.load_config(run.config_path).train.epochs == 3 and len(read_history(run)) == 3


def test_running_out_of_memory_names_the_image_size_and_batch_size(tmp_path, data, monkeypatch):
    import tensorflow as tf

    import imgclf.training

    def exhausted(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[9000000,784] and "
                                               "type float on /job:localhost/replica:0/task:0/device:CPU:0")
    monkeypatch.setattr(imgclf.training, "build_model", exhausted)
    with pytest.raises(imgclf.training.TrainingOutOfMemoryError,
                       match=r"^Out of memory training mlp on 16x16x3 images in batches of 8 \(allocating a tensor "
                             r"with shape\[9000000,784\]\)\. Pass a smaller --image-size or --batch-size, or smaller "
                             r"--hidden widths\.$"):
        imgclf.train(data, epochs=1, out=tmp_path / "run", **TINY)


def test_an_image_size_above_the_largest_is_refused_before_the_folder_is_read(tmp_path, data, capsys):
    from imgclf.cli import main

    assert main(["train", str(data), "--model", "mobilenet_v2", "--weights", "none", "--image-size", "5000",
                 "--out", str(tmp_path / "run")]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no class table: the folder was not scanned
    assert err == ("imgclf train: error: Image size 5000x5000 (--image-size, or image_size under data: in a config "
                   "file) is above the largest size imgclf trains at, 1024 pixels a side: a batch of 32 such images "
                   "is 9.6 GB in float32 before the first layer, and the layers' outputs need many times that. Pass a "
                   "size of at most 1024 a side (images are scaled down to it).\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "xdg-cache").exists()
    with pytest.raises(ConfigError) as refused:  # a thin size costs little memory: only the limit is given
        imgclf.train(data, image_size=(1025, 64), epochs=1, out=tmp_path / "run", **TINY)
    assert str(refused.value).endswith("1024 pixels a side. Pass a size of at most 1024 a side (images are scaled "
                                       "down to it).")


def test_label_smoothing_weight_decay_and_momentum_reach_the_compiled_model(tmp_path, data):
    run = imgclf.train(data, epochs=1, optimizer="sgd", momentum=0.0, learning_rate=0.01, label_smoothing=0.1,
                       weight_decay=1e-4, out=tmp_path / "run", **TINY)
    model = keras.saving.load_model(run.checkpoints / "last.keras")
    assert model.optimizer.momentum == 0.0
    assert model.optimizer.weight_decay == pytest.approx(1e-4)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    cfg = run.config().train
    assert (cfg.momentum, cfg.label_smoothing, cfg.weight_decay) == (0.0, 0.1, 1e-4)
    assert "accuracy" in read_history(run)[0]


def test_sgd_keeps_momentum_09_unless_told(tmp_path, data):
    run = imgclf.train(data, epochs=1, optimizer="sgd", out=tmp_path / "run", **TINY)
    assert keras.saving.load_model(run.checkpoints / "last.keras").optimizer.momentum == pytest.approx(0.9)


@pytest.mark.parametrize("options, named", [
    ({"schedule": "linear"}, "schedule='linear'"),
    ({"monitor": "val_f1"}, "monitor='val_f1'"),
    ({"sampler": "oversample"}, "sampler='oversample'"),
    ({"strategy": "tpu"}, "strategy='tpu'"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
    ({"warmup_epochs": 2, "schedule": "step"}, "warmup_epochs=2"),
    ({"momentum": 0.5}, "momentum=0.5"),
    ({"optimizer": "sgd", "momentum": 1.5}, "momentum=1.5"),
    ({"weight_decay": -1.0}, "weight_decay=-1.0"),
    ({"lr_factor": 2.0}, "lr_factor=2.0"),
    ({"class_weight": True, "sampler": "balanced"}, "sampler='balanced'"),
])
def test_invalid_options_name_the_value(options, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
        imgclf.config.with_options(imgclf.config.Config(), **options)


def test_balanced_sampler_draws_every_class_evenly_each_epoch():
    labels = np.array([0] * 50 + [1] * 8 + [2] * 2, dtype=np.int32)
    data = SplitImages(np.zeros((60, 2, 2, 1), np.uint8), labels, [None] * 60)
    batches = ImageBatches(data, batch_size=7, shuffle=True, sampler="balanced", seed=3)
    for epoch in range(3):
        drawn = np.concatenate([batches[i][1] for i in range(len(batches))])
        assert np.bincount(drawn).tolist() == [20, 20, 20]
        batches.on_epoch_end()
    order = balanced_order(labels, np.random.default_rng(0))
    assert len(set(order[labels[order] == 0])) == 20  # a large class is drawn without replacement


def test_balanced_sampler_is_recorded_and_trains(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    make_class_folder(tmp_path / "data", per_class=20, start=10, classes=["circle"])
    run = imgclf.train(data, epochs=1, sampler="balanced", out=tmp_path / "run", **TINY)
    assert run.config().train.sampler == "balanced"
    assert json.loads(run.environment_path.read_text())["sampler"] == "balanced"


def test_one_plain_line_per_epoch_off_a_terminal(tmp_path, data, capsys):
    imgclf.train(data, epochs=2, schedule="constant", out=tmp_path / "run", **{**TINY, "verbose": 2})
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2 (train)", "epoch 2/2 (train)"]
    assert all("val_accuracy" in line and "images/s" in line and " lr 0.001" in line for line in lines)
    assert "\r" not in out + err and "━" not in out + err  # neither tqdm's nor Keras' bar


def test_epoch_line_reads_like_a_log():
    line = epoch_line(2, 10, "fine_tune", {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "learning_rate": 1e-4},
                      seconds=2.0, images=1000)
    assert line == "epoch 3/10 (fine_tune): loss 0.5000 accuracy 0.7500 val_loss 0.6000 lr 0.0001, 2.0 s, 500 images/s"
    slow = epoch_line(0, 2, "train", {"loss": 1.0}, seconds=17.9, images=8)  # a first epoch that traces the model
    assert slow.endswith("17.9 s, 0.45 images/s")


def test_tensorboard_event_files_hold_the_epoch_scalars(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = imgclf.train(data, epochs=2, out=tmp_path / "run", **TINY)
    folders = [p for p in (run.path / "tensorboard").rglob("*") if p.is_dir() and any(p.glob("events.out.*"))]
    tags = set()
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        tags |= set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tags


def test_an_epoch_killed_after_its_tensorboard_points_is_drawn_once_when_resumed(tmp_path, data, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from imgclf.training import RunCheckpoint

    save = RunCheckpoint.on_epoch_end

    def killed_before_the_third_checkpoint(self, epoch, logs=None):
        if epoch == 2:  # TensorBoard has written the epoch's points; the checkpoint never records it
            raise KeyboardInterrupt
        save(self, epoch, logs)

    monkeypatch.setattr(RunCheckpoint, "on_epoch_end", killed_before_the_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        imgclf.train(data, epochs=4, out=tmp_path / "run", **TINY)
    monkeypatch.setattr(RunCheckpoint, "on_epoch_end", save)
    run = imgclf.train(data, epochs=4, out=tmp_path / "run", resume=True, **TINY)
    steps = {}
    for folder in ("train", "validation"):
        events = EventAccumulator(str(run.path / "tensorboard" / folder))
        events.Reload()
        steps.update({f"{folder}/{tag}": [event.step for event in events.Tensors(tag)]
                      for tag in events.Tags()["tensors"]})
    assert steps["train/epoch_loss"] == steps["validation/epoch_accuracy"] == [0, 1, 2, 3]
    counted_in_steps = steps["validation/evaluation_loss_vs_iterations"]  # the optimizer's steps at each epoch's end
    assert len(counted_in_steps) == 4 and counted_in_steps == sorted(set(counted_in_steps))


def test_mixed_precision_on_a_cpu_without_bfloat16_trains_in_float32_with_a_note(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr("imgclf.strategy.cpu_has_bfloat16", lambda: False)
    run = imgclf.train(data, epochs=1, mixed_precision=True, out=tmp_path / "run", **{**TINY, "verbose": 2})
    assert "mixed precision needs a GPU, or a CPU with bfloat16 instructions" in capsys.readouterr().out
    env = json.loads(run.environment_path.read_text())
    assert env["precision"]["policy"] == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_on_a_cpu_with_bfloat16_trains_in_bfloat16_and_saves_a_float32_model(tmp_path, data, capsys,
                                                                                             monkeypatch):
    monkeypatch.setattr("imgclf.strategy.cpu_has_bfloat16", lambda: True)  # TensorFlow emulates it where it is not
    run = imgclf.train(data, model="small_cnn", epochs=2, mixed_precision=True, image_size=(12, 12), batch_size=8,
                       out=tmp_path / "run", verbose=2, progress=False)
    out = capsys.readouterr().out
    assert "mixed_bfloat16" in out and "needs a GPU" not in out
    assert json.loads(run.environment_path.read_text())["precision"]["policy"] == "mixed_bfloat16"
    trained = keras.saving.load_model(run.checkpoints / "best.keras")
    conv = next(layer for layer in trained.layers if layer.name.startswith("conv2d"))
    assert conv.compute_dtype == "bfloat16" and trained.get_layer("probabilities").compute_dtype == "float32"
    saved = run.load_model()  # model.keras: the same weights, every layer in float32
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    for mine, theirs in zip(saved.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert keras.config.dtype_policy().name == "float32"
    assert imgclf.evaluate(run, split="val", progress=False).error_rate is not None


def test_on_a_terminal_each_epoch_has_a_bar_with_images_per_second(capsys):
    from imgclf.progress import EpochProgress

    progress = EpochProgress(epochs=2, phase="train", images_per_epoch=20, batch_size=8, bar=True)
    progress.on_epoch_begin(0)
    for batch in range(3):
        progress.on_train_batch_end(batch, {"loss": 0.5, "accuracy": 0.75})
    progress.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7})
    out, err = capsys.readouterr()
    assert "epoch 1/2" in err and "/20 " in err and "img/s" in err  # tqdm draws at most every 0.1 s
    assert out.startswith("epoch 1/2 (train): loss 0.5000 accuracy 0.7500 val_loss 0.6000 val_accuracy 0.7000")


def test_default_recipe_is_recorded_with_the_augmentation_auto_chose(tmp_path, data):
    from PIL import Image

    colour = imgclf.train(data, epochs=1, out=tmp_path / "colour", **TINY)
    grey_data = tmp_path / "grey"
    for path in data.rglob("*.png"):
        target = grey_data / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(target)
    grey = imgclf.train(grey_data, epochs=1, out=tmp_path / "grey-run", **TINY)
    assert colour.config().augment.preset == "standard" and grey.config().augment.preset == "light"
    train = TrainConfig()
    assert (train.epochs, train.schedule, train.label_smoothing, train.batch_size) == (20, "cosine", 0.1, 32)


def test_a_run_whose_loss_becomes_nan_writes_no_model_and_says_why(tmp_path, data):
    with pytest.raises(TrainingDivergedError, match=r"Training diverged: the (val_)?loss became NaN in epoch 1 "
                                                    r"\(learning rate 1e\+30\).*lower learning rate \(--lr\)"):
        imgclf.train(data, epochs=3, learning_rate=1e30, optimizer="sgd", schedule="constant", out=tmp_path / "run", **TINY)
    run = imgclf.RunDir(tmp_path / "run")
    assert not run.model_path.exists() and not (run.checkpoints / "best.keras").exists()
    assert len(read_history(run)) < 3  # stopped at the first NaN loss


def test_a_model_with_nan_weights_is_refused_when_loaded(tmp_path, data):
    run = imgclf.train(data, epochs=1, out=tmp_path / "run", **TINY)
    model = load_keras_model(run.model_path)
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    model.save(run.model_path)
    with pytest.raises(ValueError, match=r"holds NaN or infinite weights .*training diverged"):
        imgclf.load(run)
    with pytest.raises(ValueError, match=r"NaN or infinite weights"):
        imgclf.evaluate(run, progress=False)


def test_settings_the_model_does_not_use_are_named_when_training_starts(tmp_path, data, capsys):
    imgclf.train(data, model="mlp", hidden=(16,), epochs=1, batch_size=8, freeze_epochs=1, unfreeze=2,
                 out=tmp_path / "run", verbose=1, progress=False)
    out = capsys.readouterr().out
    assert ("note: freeze_epochs=1, unfreeze=2: fine-tuning phases apply to a pretrained backbone only; mlp without "
            "pretrained weights trains every layer in one phase") in out
    assert "hidden" not in out.split("note:")[1].split("\n")[0]  # mlp uses hidden


def test_files_that_pass_the_scan_but_fail_to_decode_are_counted_before_training(tmp_path, capsys):
    from badfiles import truncated_png

    root = make_class_folder(tmp_path / "data", per_class=8, classes=["circle", "square"])
    for i in range(3):
        truncated_png(root / "circle" / f"cut_{i}.png")
    run = imgclf.train(root, epochs=1, out=tmp_path / "run", **{**TINY, "verbose": 1})
    out = capsys.readouterr().out
    found = [line for line in out.splitlines() if "could not be decoded" in line]
    assert len(found) == 1 and found[0].startswith("3 more file(s) could not be decoded and are left out (truncated 3): "
                                                   "training uses train ")
    sizes = [int(n) for n in found[0].split("training uses ")[1].replace(" images", "").replace(",", "").split()[1::2]]
    assert sum(sizes) == 16 and sum(1 for e in run.manifest().entries if not e.usable) == 3


def test_a_manifest_trains_on_its_own_split_and_the_run_records_it_for_a_repeat(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=8)
    manifest = imgclf.scan(data, val=0.25, test=0.25, seed=3, progress=False)
    run = imgclf.train(manifest, epochs=1, seed=5, out=tmp_path / "run", **TINY)
    cfg = run.config()
    assert (cfg.data.val, cfg.data.test, cfg.data.seed, cfg.train.seed) == (0.25, 0.25, 3, 5)
    repeat = imgclf.train(data, config=run.config_path, out=tmp_path / "repeat", **TINY)
    splits = lambda r: sorted((e.path, e.split) for e in r.manifest().entries)  # noqa: E731
    assert splits(repeat) == splits(run)
    with pytest.raises(ConfigError, match=r"val cannot apply to a manifest: its images are split already. Pass them "
                                          r"to imgclf.scan"):
        imgclf.train(manifest, val=0.4, out=tmp_path / "refused", **TINY)
    with pytest.raises(ValueError, match="is inside the dataset"):
        imgclf.train(manifest, out=data / "run", **TINY)
    assert not (data / "run").exists() and not (tmp_path / "refused").exists()


def test_the_api_takes_a_config_dict_and_names_a_wrong_data_or_out(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6)
    run = imgclf.train(data, config={"train": {"epochs": 1, "learning_rate": 0.01}}, out=tmp_path / "run", **TINY)
    assert (run.config().train.epochs, run.config().train.learning_rate) == (1, 0.01)
    with pytest.raises(TypeError, match=r"out must be the path of the run folder to write, e.g. out='runs/NAME'. "
                                        r"Received: out=None"):
        imgclf.train(data, out=None, **TINY)
    with pytest.raises(TypeError, match=r"data must be a folder with one subfolder per class, a CSV of path,label "
                                        r"rows, or the Manifest imgclf.scan returns. Received: data=\['a'\]"):
        imgclf.train(["a"], out=tmp_path / "other", **TINY)
    # The other calls name a wrong argument as plainly.
    with pytest.raises(TypeError, match=r"root must be a folder .*: one path. Received: root=\["):
        imgclf.scan([str(data)], progress=False)
    predictor = imgclf.load(run)
    with pytest.raises(TypeError, match=r"A run is the path of the folder `imgclf train` wrote, e.g. 'runs/NAME'. "
                                        r"Received: Predictor"):
        imgclf.load(predictor)
    with pytest.raises(TypeError, match=r"data must be the path of a folder .* Received: data=Manifest\("):
        imgclf.evaluate(run, data=imgclf.scan(data, progress=False))
    with pytest.raises(ValueError, match=r"split='val' and data contradict each other"):
        imgclf.evaluate(run, "val", data=data)
    with pytest.raises(ValueError, match=r"html=True writes comparison.html into out: pass out=FOLDER too"):
        imgclf.compare([run], html=True)


def test_a_run_folder_deleted_while_training_stops_it_with_an_error(tmp_path, monkeypatch):
    import shutil

    from imgclf import training

    data = make_class_folder(tmp_path / "data", per_class=6)
    end_of_epoch = training.RunCheckpoint.on_epoch_end

    def deleting_the_folder(self, epoch, logs=None):
        if epoch == 1:
            shutil.rmtree(tmp_path / "run")
        return end_of_epoch(self, epoch, logs)

    monkeypatch.setattr(training.RunCheckpoint, "on_epoch_end", deleting_the_folder)
    with pytest.raises(RunError, match=r"run lost its config.yaml while training \(was the folder deleted or moved\?\): "
                                       r"training stops"):
        imgclf.train(data, epochs=3, out=tmp_path / "run", **TINY)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_run_that_recorded_its_augment_file_by_a_relative_path_still_resumes(tmp_path, monkeypatch):
    data = make_class_folder(tmp_path / "data", per_class=6)
    (tmp_path / "aug.yaml").write_text("transform:\n  __class_fullname__: Compose\n  transforms: []\n")
    monkeypatch.chdir(tmp_path)
    run = imgclf.train(data, epochs=1, augment="aug.yaml", out=tmp_path / "run", **TINY)
    text = run.config_path.read_text()
    assert f"preset: {tmp_path / 'aug.yaml'}" in text
    run.config_path.write_text(text.replace(f"preset: {tmp_path / 'aug.yaml'}", "preset: aug.yaml"))  # as recorded before
    resumed = imgclf.train(data, epochs=2, out=tmp_path / "run", resume=True, **TINY)
    assert len(read_history(resumed)) == 2
