"""Devices and number formats of training: the tf.distribute strategy and the mixed-precision policy.

`model.fit` runs under `tf.distribute.MirroredStrategy` as under the default
strategy (Keras 3, also with a `keras.utils.PyDataset`); the model must be
built or loaded, and compiled, inside `Devices.scope()`.
"""

from __future__ import annotations

import contextlib
import dataclasses


@dataclasses.dataclass
class Devices:
    """Where training runs.

    Attributes:
        name: `"default"` or `"mirrored"`.
        strategy: the `tf.distribute.Strategy`.
        devices: names of the devices the model is copied to.
        precision: the Keras dtype policy, `"float32"` or `"mixed_float16"`.
        note: why a requested setting was not used, or `None`.
    """

    name: str
    strategy: object
    devices: list[str]
    precision: str = "float32"
    note: str | None = None

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
        return text + (f", {self.precision}" if self.precision != "float32" else "")


def choose_devices(strategy: str = "auto", *, mixed_precision: bool = False) -> Devices:
    """Picks the tf.distribute strategy and the dtype policy.

    Args:
        strategy: `"default"` (one device), `"mirrored"` (every GPU, or every
            logical CPU device when there is no GPU) or `"auto"` (`"mirrored"`
            with several GPUs, else `"default"`). Defaults to `"auto"`.
        mixed_precision: use `mixed_float16` on a GPU. Without a GPU it
            would only be slower, so it is left out and `note` says so.
            Defaults to `False`.

    Returns:
        A `Devices`.
    """
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    if strategy not in ("auto", "default", "mirrored"):
        raise ValueError(f"Unknown strategy: expected auto, default or mirrored. Received: strategy={strategy!r}")
    name = ("mirrored" if len(gpus) > 1 else "default") if strategy == "auto" else strategy
    if name == "mirrored":
        devices = gpus or cpus
        chosen = tf.distribute.MirroredStrategy(devices)
    else:
        devices = gpus[:1] or cpus[:1]
        chosen = tf.distribute.get_strategy()
    precision, note = "float32", None
    if mixed_precision:
        if gpus:
            precision = "mixed_float16"
        else:
            note = "mixed precision needs a GPU and would be slower on this CPU: training in float32"
    return Devices(name, chosen, devices, precision, note)
