"""tf.distribute: the strategy chosen, and MirroredStrategy over two logical CPU devices in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import imgclf
from conftest import make_class_folder

ROOT = Path(__file__).resolve().parent.parent

# Logical devices must be configured before TensorFlow initialises its devices, so this runs in its own process.
MIRRORED_RUNS = textwrap.dedent("""
    import csv, json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import imgclf
    import imgclf.training

    data, out = sys.argv[1], sys.argv[2]
    options = dict(model="mlp", hidden=(16,), batch_size=8, epochs=5, learning_rate=0.01, schedule="plateau",
                   lr_patience=1, lr_factor=0.5, monitor="val_accuracy", strategy="mirrored", verbose=0,
                   progress=False)
    whole = imgclf.train(data, out=out + "/whole", **options)

    save = imgclf.training.RunCheckpoint.on_epoch_end
    def save_then_die(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt
    imgclf.training.RunCheckpoint.on_epoch_end = save_then_die
    try:
        imgclf.train(data, out=out + "/killed", **options)
    except KeyboardInterrupt:
        pass
    imgclf.training.RunCheckpoint.on_epoch_end = save
    resumed = imgclf.train(data, out=out + "/killed", resume=True, **options)

    def rows(run):
        with open(run.history_path) as handle:
            return list(csv.DictReader(handle))
    print(json.dumps({"whole": rows(whole), "resumed": rows(resumed),
                      "environment": json.loads(whole.environment_path.read_text()),
                      "killed_state": json.loads((resumed.checkpoints / "state.json").read_text())}))
""")


def test_auto_and_default_use_one_device_on_this_cpu():
    from imgclf.strategy import choose_devices

    for name in ("auto", "default"):
        devices = choose_devices(name)
        assert (devices.name, devices.replicas, len(devices.devices)) == ("default", 1, 1)
    with pytest.raises(ValueError, match="strategy='tpu'"):
        choose_devices("tpu")


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_trains_checkpoints_and_resumes_to_the_same_history(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=10)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_RUNS, str(data), str(tmp_path / "runs")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    strategy = result["environment"]["strategy"]
    assert strategy["name"] == "mirrored" and strategy["replicas"] == 2
    assert [d.rsplit(":", 2)[-2:] for d in strategy["devices"]] == [["CPU", "0"], ["CPU", "1"]]
    whole, resumed = result["whole"], result["resumed"]
    assert [(r["epoch"], r["phase"], r["learning_rate"]) for r in resumed] == [
        (r["epoch"], r["phase"], r["learning_rate"]) for r in whole]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(r[key]) for r in resumed] == pytest.approx([float(r[key]) for r in whole], rel=1e-4, abs=1e-6)
    assert len(whole) == 5 and float(whole[-1]["accuracy"]) > float(whole[0]["accuracy"])
