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

# Prepended to the scripts below: makes the next `imgclf.train` stop with KeyboardInterrupt once epoch 2 is saved.
STOP_AFTER_SECOND_EPOCH = textwrap.dedent("""
    def stop_after_second_epoch():
        import imgclf.training

        save = imgclf.training.RunCheckpoint.on_epoch_end
        def save_then_die(self, epoch, logs=None):
            save(self, epoch, logs)
            if epoch == 1:
                imgclf.training.RunCheckpoint.on_epoch_end = save
                raise KeyboardInterrupt
        imgclf.training.RunCheckpoint.on_epoch_end = save_then_die
""")

# Logical devices must be configured before TensorFlow initialises its devices, so this runs in its own process.
MIRRORED_RUNS = STOP_AFTER_SECOND_EPOCH + textwrap.dedent("""
    import csv, json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import imgclf
    import imgclf.training

    data, out = sys.argv[1], sys.argv[2]
    # An odd batch: Keras' fit fails on a first batch the replicas cannot share evenly, so imgclf rounds it up.
    options = dict(model="mlp", hidden=(16,), batch_size=7, epochs=5, learning_rate=0.01, schedule="plateau",
                   lr_patience=1, lr_factor=0.5, monitor="val_accuracy", strategy="mirrored", verbose=0,
                   progress=False)
    whole = imgclf.train(data, out=out + "/whole", **options)

    stop_after_second_epoch()
    try:
        imgclf.train(data, out=out + "/killed", **options)
    except KeyboardInterrupt:
        pass
    resumed = imgclf.train(data, out=out + "/killed", resume=True, **options)

    def rows(run):
        with open(run.history_path) as handle:
            return list(csv.DictReader(handle))
    print(json.dumps({"whole": rows(whole), "resumed": rows(resumed), "batch_size": whole.config().train.batch_size,
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
    assert result["batch_size"] == 8


# One worker of a two-process cluster on 127.0.0.1; TF_CONFIG comes from the environment.
WORKER = STOP_AFTER_SECOND_EPOCH + textwrap.dedent("""
    import sys
    import numpy as np
    import imgclf
    import imgclf.training

    data, out, weights_file, mode = sys.argv[1:5]
    options = dict(model="mlp", hidden=(16,), batch_size=8, epochs=3, learning_rate=0.01, class_weight=True,
                   strategy="multi-worker", verbose=1, progress=False)

    train_in_phases = imgclf.training._train_in_phases
    def keep_weights(model, *args, **kwargs):
        train_in_phases(model, *args, **kwargs)
        np.savez(weights_file, *model.get_weights())
    imgclf.training._train_in_phases = keep_weights

    if mode == "killed":
        stop_after_second_epoch()
        try:
            imgclf.train(data, out=out, **options)
        except KeyboardInterrupt:
            print("stopped after epoch 2")
    else:
        imgclf.train(data, out=out, resume=mode == "resume", **options)
""")


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster(data: Path, out: Path, weights: Path, mode: str) -> list[str]:
    """Runs both workers of a fresh two-worker cluster to the end; returns their outputs."""
    return _workers(WORKER, [[str(data), str(out), str(weights / f"{mode}-{index}.npz"), mode] for index in range(2)])


def _workers(script: str, arguments: list[list[str]]) -> list[str]:
    """Runs `script` as each worker of a fresh cluster, with its own arguments, to the end; returns their outputs."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(len(arguments))]
    processes = []
    for index, argv in enumerate(arguments):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config}
        processes.append(subprocess.Popen([sys.executable, "-c", script, *argv], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:  # a worker left waiting for one that failed
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def _weights(path: Path) -> list:
    import numpy as np

    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _history(run: Path) -> list[dict]:
    import csv

    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_workers_given_other_images_or_flags_are_refused_by_every_worker(tmp_path):
    script = textwrap.dedent("""
        import sys
        import imgclf
        from imgclf.runs import RunError

        data, out, learning_rate = sys.argv[1:4]
        try:
            imgclf.train(data, out=out, model="mlp", hidden=(8,), batch_size=8, epochs=1, strategy="multi-worker",
                         learning_rate=float(learning_rate), verbose=0, progress=False)
        except RunError as error:
            print(f"refused: {error}")
    """)
    data = make_class_folder(tmp_path / "data", per_class=6)
    other = make_class_folder(tmp_path / "other", per_class=6, start=1)
    outputs = _workers(script, [[str(data), str(tmp_path / "run"), "0.01"], [str(other), str(tmp_path / "run"), "0.02"]])
    for output in outputs:
        assert ("refused: The workers of this cluster were started with different images, labels or splits and "
                "training settings, so they cannot train one model together. Start every worker with the same "
                "command") in output, output[-3000:]
    assert not (tmp_path / "run" / "history.csv").exists()


@pytest.mark.slow
def test_two_workers_on_localhost_end_with_identical_weights_and_resume_at_the_next_epoch(tmp_path):
    import numpy as np

    data = make_class_folder(tmp_path / "data", per_class=10)
    weights = tmp_path / "weights"
    weights.mkdir()

    chief, other = _cluster(data, tmp_path / "whole", weights, "whole")
    assert "strategy multi-worker" in chief and "2 workers, this one the chief" in chief
    assert "this one not the chief" in other
    for mine, theirs in zip(_weights(weights / "whole-0.npz"), _weights(weights / "whole-1.npz")):
        np.testing.assert_array_equal(mine, theirs)
    whole = _history(tmp_path / "whole")
    assert [row["epoch"] for row in whole] == ["0", "1", "2"]
    assert (tmp_path / "whole" / "model.keras").exists()
    environment = json.loads((tmp_path / "whole" / "environment.json").read_text())
    assert (environment["strategy"]["name"], environment["strategy"]["workers"]) == ("multi-worker", 2)

    _cluster(data, tmp_path / "resumed", weights, "killed")
    assert [row["epoch"] for row in _history(tmp_path / "resumed")] == ["0", "1"]
    chief, other = _cluster(data, tmp_path / "resumed", weights, "resume")
    assert "epochs 3-3 of 3" in chief and "epochs 3-3 of 3" in other
    resumed = _history(tmp_path / "resumed")
    assert [row["epoch"] for row in resumed] == ["0", "1", "2"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(r[key]) for r in resumed] == pytest.approx([float(r[key]) for r in whole], rel=1e-4, abs=1e-6)
    for mine, theirs in zip(_weights(weights / "resume-0.npz"), _weights(weights / "resume-1.npz")):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(_weights(weights / "resume-0.npz"), _weights(weights / "whole-0.npz")):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_multi_worker_without_tf_config_names_the_variable(monkeypatch):
    from imgclf.strategy import choose_devices

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable, which is not set"):
        choose_devices("multi-worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match=r"not a usable cluster description \(ValueError: task index 3 is not one of "
                                         r"the 1 worker entries of the cluster \(0-0\)\)"):
        choose_devices("multi-worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}')
    with pytest.raises(ValueError, match=r"cluster.worker must be a list of host:port, not '127.0.0.1:1'"):
        choose_devices("multi-worker")


# A last batch smaller than the number of replicas would leave a replica with no image (a crash in its layers, or a
# NaN loss); `fit_epochs` reads batches through `_distributed`, which puts such a batch into the one before it.
SHORT_LAST_BATCH = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from imgclf.distributed import _distributed

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    def batches(*sizes):
        return [(np.full((n, 4, 4, 1), i, np.uint8), np.full((n,), i, np.int32)) for i, n in enumerate(sizes)]

    def steps(sizes):
        return [[int(x.shape[0]) for x in strategy.experimental_local_results(images)]
                for images, _ in _distributed(batches(*sizes), strategy, None)]

    print(json.dumps({"8,8,1": steps((8, 8, 1)), "8,8,2": steps((8, 8, 2))}))
""")


def test_a_last_batch_smaller_than_the_replicas_joins_the_batch_before_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SHORT_LAST_BATCH], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["8,8,1"] == [[4, 4], [5, 4]]  # 17 images in two steps, every replica with some
    assert result["8,8,2"] == [[4, 4], [4, 4], [1, 1]]


def test_splits_or_batches_smaller_than_the_replicas_are_refused_before_training():
    from imgclf.training import _refuse_batches_below_replicas

    _refuse_batches_below_replicas(8, {"train": 17, "val": 2}, 2)
    _refuse_batches_below_replicas(8, {"train": 17, "val": 0}, 2)  # no validation split: nothing to split
    with pytest.raises(ValueError, match=r"the val split holds 1 image\(s\). Pass --val 0, or a larger --val"):
        _refuse_batches_below_replicas(8, {"train": 17, "val": 1}, 2)
    with pytest.raises(ValueError, match=r"pass a --batch-size of at least 2. Received: --batch-size 1"):
        _refuse_batches_below_replicas(1, {"train": 17, "val": 2}, 2)


def test_mirrored_shares_batches_evenly_and_refuses_a_split_of_less_than_one_batch_it_cannot_share(capsys):
    from types import SimpleNamespace

    from imgclf.config import Config
    from imgclf.training import _batch_shared_evenly, _refuse_splits_replicas_cannot_share

    three_gpus = SimpleNamespace(name="mirrored", replicas=3)
    assert _batch_shared_evenly(Config(), three_gpus, verbose=1).train.batch_size == 33
    assert capsys.readouterr().out == ("note: batch size 32 rounded up to 33, so that each of the 3 replicas gets 11 "
                                       "images of a batch\n")
    assert _batch_shared_evenly(Config(), SimpleNamespace(name="mirrored", replicas=2), verbose=1).train.batch_size == 32
    assert _batch_shared_evenly(Config(), SimpleNamespace(name="default", replicas=1), verbose=1).train.batch_size == 32
    _refuse_splits_replicas_cannot_share(32, {"train": 61, "val": 33}, 3)  # a short last batch is fine
    _refuse_splits_replicas_cannot_share(32, {"train": 61, "val": 0}, 3)
    with pytest.raises(ValueError, match=r"the val split holds 10 image\(s\), less than one batch and not a multiple "
                                         r"of 3. Pass --val 0, or a larger --val."):
        _refuse_splits_replicas_cannot_share(33, {"train": 61, "val": 10}, 3)
    with pytest.raises(ValueError, match=r"the train split of 3 images needs a --batch-size of at least 4. Received: "
                                         r"--batch-size 2"):
        _refuse_splits_replicas_cannot_share(2, {"train": 3, "val": 0}, 2)


@pytest.mark.parametrize("images, batch_size, replicas, sizes", [
    (17, 8, 1, [8, 8, 1]),
    (17, 8, 2, [8, 9]),  # a last image alone would leave a device empty (a crash in batch normalisation)
    (9, 8, 2, [6, 3]),  # the first batch, which Keras averages over the devices, stays a multiple of them
    (34, 33, 3, [30, 4]),
    (100, 33, 3, [33, 33, 34]),
    (24, 8, 2, [8, 8, 8]),
    (25, 8, 4, [8, 8, 9]),
    (7, 8, 2, [7]),  # less than one batch: refused before training unless a multiple of the devices
])
def test_mirrored_batches_leave_no_device_without_an_image(images, batch_size, replicas, sizes):
    import numpy as np

    from imgclf.pipeline import ImageBatches, SplitImages

    split = SplitImages(np.arange(images, dtype=np.uint8).reshape(images, 1, 1, 1), np.zeros(images, np.int32),
                        [None] * images)
    batches = ImageBatches(split, batch_size=batch_size, shuffle=True, replicas=replicas)
    read = [batches[i] for i in range(len(batches))]
    assert [len(labels) for _, labels in read] == sizes
    assert sorted(int(v) for images, _ in read for v in images.ravel()) == list(range(images))  # each image once


# TensorFlow's coordination service installs a SIGTERM handler of its own when the multi-worker strategy is made.
SIGTERM_AFTER_JOINING = textwrap.dedent("""
    import os, signal, time
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    from imgclf.strategy import choose_devices

    choose_devices("multi-worker")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)
    print("handled" if received else "lost")
""")


PORT_IN_USE = textwrap.dedent("""
    import json, os, socket
    from imgclf.strategy import choose_devices

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                          "task": {"type": "worker", "index": 0}})
    try:
        choose_devices("multi-worker")
    except ValueError as error:
        print(str(error).replace(str(port), "PORT"))
""")


def test_a_worker_whose_port_is_taken_names_its_address_and_the_fix():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", PORT_IN_USE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == (
        "This worker cannot listen on 127.0.0.1:PORT, its address in TF_CONFIG: another process uses the port, or the "
        "host is not this machine. Free the port or choose another one in TF_CONFIG, on every worker.")


def test_a_worker_that_stops_answering_is_named_with_the_command_that_resumes(monkeypatch):
    import tensorflow as tf

    from imgclf.runs import RunError
    from imgclf.training import _lost_workers_named

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["host1:1", "host2:1"]}, "task": {"type": "worker", '
                                     '"index": 0}}')
    with pytest.raises(RunError, match=r"A worker of the cluster \(host1:1, host2:1\) stopped answering, so this one "
                                       r"stopped too: .* start every worker again with the same command and --resume"):
        with _lost_workers_named():
            raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: ... task:1 unhealthy")


def test_sigterm_still_reaches_imgclf_once_a_worker_has_joined_its_cluster(tmp_path):
    cluster = {"cluster": {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]}, "task": {"type": "worker", "index": 0}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(cluster)}
    done = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_JOINING], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "handled"
