"""Epochs under `tf.distribute.MultiWorkerMirroredStrategy`, where `model.fit` fails.

`fit_epochs` does what `model.fit(verbose=0, shuffle=False)` does for
`imgclf.training`, with Keras's own `train_step` and `test_step` run by
`strategy.run` over `strategy.experimental_distribute_dataset` (the model,
its loss, metrics and optimizer, loss scaling included, stay Keras's), and the
same callbacks called in the same order with the same logs, so checkpoints,
resume, schedules, early stopping and history behave as under `model.fit`.

Every worker reads the same batches (seeded by the epoch) and trains on its
own slice of each; gradients are summed across workers, so every worker ends
each step with the same weights. Metrics are read across all workers.
"""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np

from .runs import RunError


def fit_epochs(model, training, validation, *, strategy, epochs: int, initial_epoch: int, callbacks: list,
               class_weight: dict[int, float] | None = None) -> None:
    """Trains `model` from `initial_epoch` to `epochs` under `strategy`, calling `callbacks` as `model.fit` does.

    Args:
        model: a compiled Keras model built in `strategy.scope()`.
        training: a `keras.utils.PyDataset` of `(images, labels)` batches of
            the global batch size; its `on_epoch_end` is called after each
            epoch, as `model.fit` does.
        validation: a `keras.utils.PyDataset` of validation batches, or `None`.
        strategy: the `tf.distribute.Strategy` the model was built under.
        epochs: the epoch to stop before (as `model.fit(epochs=...)`).
        initial_epoch: the first epoch to train.
        callbacks: Keras callbacks.
        class_weight: class index -> weight of its images in the loss, or
            `None`.
    """
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, add_history=False, add_progbar=False,
                                                 verbose=0, epochs=epochs, steps=len(training))
    train_step, test_step, results = _step_functions(model, strategy)
    if not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step, batch in enumerate(_distributed(training, strategy, class_weight)):
            callback_list.on_train_batch_begin(step)
            train_step(batch)
            logs = _numbers(results())
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if validation is not None and not model.stop_training:
            model.reset_metrics()
            callback_list.on_test_begin()
            for step, batch in enumerate(_distributed(validation, strategy, None)):
                callback_list.on_test_batch_begin(step)
                test_step(batch)
                callback_list.on_test_batch_end(step)
            val_logs = _numbers(results())
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{key}": value for key, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        training.on_epoch_end()
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


def refuse_disagreeing_workers(strategy, shared: dict[str, object]) -> None:
    """Raises `RunError` on every worker of a cluster whose workers were not given the same data and settings.

    Workers given other images would each train on their own, and workers
    given other settings would run other steps against the same
    collectives: the cluster would fail later with a misleading error, or
    not at all. Each worker hashes each part of `shared` and the hashes of
    every worker are gathered, so every worker names the same parts.

    Args:
        strategy: the `MultiWorkerMirroredStrategy` of the run.
        shared: what every worker must agree on, by name, e.g.
            `{"images, labels and splits": manifest.data_hash}`; any values
            `json.dumps` can write.

    Raises:
        RunError: naming the parts that differ between workers.
    """
    import tensorflow as tf

    names = list(shared)
    mine = np.array([int(hashlib.sha1(json.dumps(shared[name], sort_keys=True, default=str).encode()).hexdigest()[:7], 16)
                     for name in names], np.int32)
    everyone = strategy.gather(strategy.run(lambda: tf.constant(mine)[None]), axis=0).numpy()
    differing = [name for index, name in enumerate(names) if len(set(everyone[:, index])) > 1]
    if differing:
        raise RunError(f"The workers of this cluster were started with different {' and '.join(differing)}, so "
                       "they cannot train one model together. Start every worker with the same command: the same "
                       "images (a copy of the same folder, or the same --manifest) and the same flags; only paths "
                       "(--out, --manifest, a --weights file, an --augment YAML) and --workers may differ.")


def _step_functions(model, strategy):
    """Compiled functions: a training step and a test step on one distributed batch, and the metrics across workers."""
    import tensorflow as tf

    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    @tf.function
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    @tf.function
    def results():
        # Outside `strategy.run`, Keras's metric variables are read summed over every replica of every worker.
        return model.get_metrics_result()

    return train_step, test_step, results


def _distributed(batches, strategy, class_weight):
    """The batches of a `PyDataset` as a distributed dataset, with per-image weights from `class_weight`.

    Every replica must get at least one image of each batch (a replica with
    none fails in its layers, or gives a NaN loss): a last batch smaller than
    the number of replicas goes into the batch before it. (Training refuses
    batch sizes and splits smaller than that before it starts.)
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    first = batches[0]  # read once, for the signature and as the first batch: decoding it twice would cost a batch
    images, labels = first
    signature = (tf.TensorSpec((None, *images.shape[1:]), tf.as_dtype(images.dtype)),
                 tf.TensorSpec((None, *labels.shape[1:]), tf.as_dtype(labels.dtype)))
    if class_weight is not None:
        signature += (tf.TensorSpec((None,), tf.float32),)
        table = np.array([class_weight[c] for c in range(len(class_weight))], dtype=np.float32)

    def weighted(images, labels):
        if class_weight is None:
            return images, labels
        classes = labels if labels.ndim == 1 else np.argmax(labels, axis=-1)
        return images, labels, table[classes]

    def generate():
        held = first
        for index in range(1, len(batches)):
            batch = batches[index]
            if len(batch[0]) < replicas:  # only the last batch can be short
                batch = tuple(np.concatenate(pair) for pair in zip(held, batch))
            else:
                yield weighted(*held)
            held = batch
        yield weighted(*held)

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)
    options = tf.data.Options()
    # Every worker reads every batch and keeps its own slice of it: the batches come from Python, not files.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _numbers(logs: dict) -> dict[str, float]:
    return {key: float(value) for key, value in logs.items()}
