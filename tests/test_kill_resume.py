"""A training process killed with SIGKILL in the middle of an epoch resumes to the history of a run never stopped."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import make_class_folder

ROOT = Path(__file__).resolve().parent.parent

# Trains in a fresh process. With "kill", the process sends itself SIGKILL after the second batch of
# the third epoch: no Python cleanup runs, as when the machine or an operator kills it.
TRAIN = textwrap.dedent("""
    import os, signal, sys
    data, out, strategy, mode, model = sys.argv[1:6]
    if strategy == "mirrored":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import imgclf
    import imgclf.training

    if mode == "kill":
        def begin(self, epoch, logs=None):
            self.epoch_now = epoch
            begin_epoch(self, epoch, logs)
        def die_mid_epoch(self, batch, logs=None):
            if self.epoch_now == 2 and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        begin_epoch = imgclf.training.RunCheckpoint.on_epoch_begin
        imgclf.training.RunCheckpoint.on_epoch_begin = begin
        imgclf.training.RunCheckpoint.on_train_batch_end = die_mid_epoch
    elif mode in ("kill-after-checkpoint", "kill-after-state", "kill-after-last-state"):
        # Killed inside the end of the second epoch: after its checkpoint is saved, or after state.json records it.
        import imgclf.runs
        saves = []
        def save_model(self, model, path=None):
            written = save(self, model, path)
            saves.append(written)
            if mode == "kill-after-checkpoint" and len(saves) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return written
        def write_json(path, value):
            written = write(path, value)
            if path.name == "state.json" and (mode, value["epoch"]) in (("kill-after-state", 1),
                                                                          ("kill-after-last-state", 3)):
                os.kill(os.getpid(), signal.SIGKILL)
            return written
        save, write = imgclf.runs.RunDir.save_model, imgclf.training.write_json
        imgclf.runs.RunDir.save_model, imgclf.training.write_json = save_model, write_json
    imgclf.train(data, out=out, resume=mode == "resume", model=model, hidden=(16,), batch_size=8, epochs=4,
                 learning_rate=0.01, schedule="cosine", augment="light", strategy=strategy, verbose=0,
                 progress=False)
""")


def _train(data: Path, out: Path, strategy: str, mode: str, model: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", TRAIN, str(data), str(out), strategy, mode, model], env=env,
                          capture_output=True, text=True, timeout=600)


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def uninterrupted_mlp(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A data folder and the history of the mlp trained on it never stopped, for the tests that kill the same run."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = make_class_folder(root / "data", per_class=10)
    whole = _train(data, root / "whole", "default", "whole", "mlp")
    assert whole.returncode == 0, whole.stderr[-3000:]
    return data, _history(root / "whole")


# small_cnn has dropout and batch norm; under `mirrored` only the mlp is checked, since a resumed mirrored
# run of small_cnn does not always repeat the uninterrupted history (losses differ by up to a few percent).
@pytest.mark.slow
@pytest.mark.parametrize("strategy, model", [("default", "small_cnn"), ("mirrored", "mlp")])
def test_sigkill_mid_epoch_then_resume_repeats_the_uninterrupted_history(tmp_path, strategy, model):
    data = make_class_folder(tmp_path / "data", per_class=10)
    whole = _train(data, tmp_path / "whole", strategy, "whole", model)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _train(data, tmp_path / "killed", strategy, "kill", model)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [row["epoch"] for row in _history(tmp_path / "killed")] == ["0", "1"]
    assert not (tmp_path / "killed" / "model.keras").exists()

    resumed = _train(data, tmp_path / "killed", strategy, "resume", model)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _history(tmp_path / "whole"), _history(tmp_path / "killed")
    assert [(r["epoch"], r["learning_rate"]) for r in got] == [(r["epoch"], r["learning_rate"]) for r in expected]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(r[key]) for r in got] == pytest.approx([float(r[key]) for r in expected], rel=1e-4, abs=1e-6)
    assert (tmp_path / "killed" / "model.keras").exists()


@pytest.mark.slow
@pytest.mark.parametrize("moment, finished", [("kill-after-checkpoint", ["0"]), ("kill-after-state", ["0", "1"]),
                                              ("kill-after-last-state", ["0", "1", "2", "3"])])
def test_a_kill_while_an_epoch_is_saved_resumes_to_the_uninterrupted_history(tmp_path, uninterrupted_mlp, moment,
                                                                            finished):
    data, expected = uninterrupted_mlp
    killed = _train(data, tmp_path / "killed", "default", moment, "mlp")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [row["epoch"] for row in _history(tmp_path / "killed")] == finished

    resumed = _train(data, tmp_path / "killed", "default", "resume", "mlp")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = _history(tmp_path / "killed")
    assert [(r["epoch"], r["learning_rate"]) for r in got] == [(r["epoch"], r["learning_rate"]) for r in expected]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(r[key]) for r in got] == pytest.approx([float(r[key]) for r in expected], rel=1e-4, abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == [
        "best.keras", "last.keras", "state.json"]


@pytest.mark.slow
def test_a_checkpoint_of_another_epoch_than_state_json_records_is_refused_on_resume(tmp_path, uninterrupted_mlp):
    data, _ = uninterrupted_mlp
    killed = _train(data, tmp_path / "run", "default", "kill-after-state", "mlp")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (tmp_path / "run" / "checkpoints" / "epoch-2.keras").unlink()  # taken for litter: last.keras is epoch 1's
    resumed = _train(data, tmp_path / "run", "default", "resume", "mlp")
    assert resumed.returncode == 1
    assert (f"{tmp_path}/run/checkpoints/last.keras does not hold the epoch {tmp_path}/run/checkpoints/state.json "
            "records (epoch 2: ") in resumed.stderr
