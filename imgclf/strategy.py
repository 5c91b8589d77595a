"""Devices and number formats of training: the tf.distribute strategy and the mixed-precision policy.

`model.fit` runs under `tf.distribute.MirroredStrategy` as under the default
strategy (Keras 3, also with a `keras.utils.PyDataset`); the model must be
built or loaded, and compiled, inside `Devices.scope()`. Under
`MultiWorkerMirroredStrategy` it fails (keras-team/keras#20585), so
`imgclf.distributed` runs the epochs there.

A multi-worker cluster is described by the `TF_CONFIG` environment variable,
as in TensorFlow's multi-worker tutorial; its chief (task `chief`, or worker
0 when there is none) alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading


@dataclasses.dataclass
class Devices:
    """Where training runs.

    Attributes:
        name: `"default"`, `"mirrored"` or `"multi-worker"`.
        strategy: the `tf.distribute.Strategy`.
        devices: names of this process's devices the model is copied to.
        precision: the Keras dtype policy: `"float32"`, `"mixed_float16"`
            (a GPU) or `"mixed_bfloat16"` (a CPU with bfloat16 instructions).
        note: why a requested setting was not used, or `None`.
        chief: whether this process writes the run directory (every
            process but the non-chief workers of a multi-worker cluster).
        workers: processes training together (1 unless multi-worker).
    """

    name: str
    strategy: object
    devices: list[str]
    precision: str = "float32"
    note: str | None = None
    chief: bool = True
    workers: int = 1

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @contextlib.contextmanager
    def scope(self):
        """The strategy's scope with the dtype policy set; the previous global policy is restored after."""
        import keras

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        try:
            with self.strategy.scope():
                yield self
        finally:
            keras.config.set_dtype_policy(previous)

    def describe(self) -> str:
        where = ", ".join(device.rsplit("device:", 1)[-1] for device in self.devices)  # "CPU:0", not the full name
        text = f"strategy {self.name} on {where}" + (f" ({self.replicas} replicas)" if self.replicas > 1 else "")
        if self.workers > 1:
            text += f", {self.workers} workers, this one {'the chief' if self.chief else 'not the chief'}"
        return text + (f", {self.precision}" if self.precision != "float32" else "")


def choose_devices(strategy: str = "auto", *, mixed_precision: bool = False) -> Devices:
    """Picks the tf.distribute strategy and the dtype policy.

    Args:
        strategy: `"default"` (one device), `"mirrored"` (every GPU, or every
            logical CPU device when there is no GPU), `"multi-worker"` (the
            processes `TF_CONFIG` lists, each with its GPUs or its CPU) or
            `"auto"` (`"mirrored"` with several GPUs, else `"default"`).
            Defaults to `"auto"`.
        mixed_precision: use `mixed_float16` on a GPU, `mixed_bfloat16` on
            a CPU that computes bfloat16 natively (`cpu_has_bfloat16`). On
            any other CPU it would only be slower, so it is left out and
            `note` says so. Defaults to `False`.

    Returns:
        A `Devices`.

    Raises:
        ValueError: for an unknown strategy, or `"multi-worker"` without a
            usable `TF_CONFIG`.
    """
    if strategy not in ("auto", "default", "mirrored", "multi-worker"):
        raise ValueError(f"Unknown strategy: expected auto, default, mirrored or multi-worker. Received: strategy={strategy!r}")
    # A missing or broken TF_CONFIG fails here, before TensorFlow starts.
    workers = cluster_workers() if strategy == "multi-worker" else 1
    import tensorflow as tf

    if strategy == "multi-worker":
        # Created before the devices are listed: listing them starts TensorFlow's runtime, which a
        # multi-worker strategy must configure first.
        term = signal.getsignal(signal.SIGTERM)
        with _stoppable_while_waiting(), _own_address_named():
            chosen = tf.distribute.MultiWorkerMirroredStrategy()
        if term is not None and threading.current_thread() is threading.main_thread():
            # TensorFlow's coordination service took SIGTERM over: without this, `kill` would not stop training.
            signal.signal(signal.SIGTERM, term)
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    name = ("mirrored" if len(gpus) > 1 else "default") if strategy == "auto" else strategy
    if name == "multi-worker":
        devices = gpus or cpus[:1]
    elif name == "mirrored":
        devices = gpus or cpus
        chosen = tf.distribute.MirroredStrategy(devices)
    else:
        devices = gpus[:1] or cpus[:1]
        chosen = tf.distribute.get_strategy()
    precision, note = "float32", None
    if mixed_precision:
        if gpus:
            precision = "mixed_float16"
        elif cpu_has_bfloat16():
            precision = "mixed_bfloat16"
        else:
            note = ("mixed precision needs a GPU, or a CPU with bfloat16 instructions (AVX512_BF16 or AMX), and "
                    "would be slower on this CPU: training in float32")
    return Devices(name, chosen, devices, precision, note, chief=name != "multi-worker" or is_chief(), workers=workers)


@contextlib.contextmanager
def _stoppable_while_waiting():
    """Ctrl-C ends the process at once while TensorFlow waits, inside one call, for the other workers of the cluster
    to start: Python's own handler would only run once that call returns, which may be never. (SIGTERM cannot be
    given back the same way: TensorFlow installs a handler of its own for it inside that call.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _own_address_named():
    """TensorFlow's "Could not start gRPC server" as the address of TF_CONFIG that this worker cannot listen on."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.UnknownError as error:
        if "gRPC server" not in str(error):
            raise
        config = _tf_config()
        task = config["task"]
        address = config["cluster"][task["type"]][int(task["index"])]
        raise ValueError(f"This worker cannot listen on {address}, its address in TF_CONFIG: another process uses the "
                         "port, or the host is not this machine. Free the port or choose another one in TF_CONFIG, "
                         "on every worker.") from None


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (the `avx512_bf16` or `amx_bf16` flag of Linux's
    /proc/cpuinfo), where `mixed_bfloat16` trains faster than float32; elsewhere TensorFlow would emulate it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def float32_model(model):
    """A copy of `model` whose every layer computes in float32, with the same weights.

    A model trained under a mixed-precision policy keeps its weights in float32
    but computes in float16 or bfloat16; the copy is what a run saves as
    `model.keras`, so that predicting, evaluating and exporting it give the
    same numbers on any machine.
    """
    copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(value):
    """`value` (a Keras config) with every mixed dtype policy replaced by float32."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" and str(value.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**value, "config": {**value["config"], "name": "float32"}}
        return {key: _float32_config(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ValueError("--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, which is "
                         "not set. Set it on every machine, e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                         "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
                         "(README: \"Training on several GPUs or machines\").")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        if not isinstance(members, list):
            raise ValueError(f"cluster.{task['type']} must be a list of host:port, not {members!r}")
        if not 0 <= int(task["index"]) < len(members):
            raise ValueError(f"task index {task['index']} is not one of the {len(members)} {task['type']} entries of "
                             f"the cluster (0-{len(members) - 1})")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a usable cluster description ({type(error).__name__}: {error}). It needs "
                         "\"cluster\" (task type -> list of host:port) and \"task\" ({\"type\": ..., \"index\": ...} "
                         f"naming an entry of the cluster). Received: TF_CONFIG={text!r}") from None
    return config


def cluster_workers() -> int:
    """Processes training together in the cluster of `TF_CONFIG` (chief and workers).

    Raises:
        ValueError: if `TF_CONFIG` is missing or does not describe this task.
    """
    return len(cluster_addresses())


def cluster_addresses() -> list[str]:
    """The `host:port` of every process training in the cluster of `TF_CONFIG` (chief and workers).

    Raises:
        ValueError: if `TF_CONFIG` is missing or does not describe this task.
    """
    cluster = _tf_config()["cluster"]
    return [str(address) for kind in ("chief", "worker") for address in cluster.get(kind, [])]


def is_chief() -> bool:
    """Whether `TF_CONFIG` makes this process the chief: task `chief`, or worker 0 of a cluster without one.

    Reads only the environment, so it can be asked before TensorFlow is imported.
    """
    config = _tf_config()
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return kind == "chief" or (kind == "worker" and index == 0 and not config["cluster"].get("chief"))
