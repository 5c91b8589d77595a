"""Pretrained backbones: building, preprocessing, weights (ImageNet cache, files, runs) and unfreezing."""

import csv
import json
import os
import warnings

import keras
import numpy as np
import pytest

import imgclf
from conftest import make_class_folder
from imgclf.config import ImageSpec, ModelConfig
from imgclf.models import build_model, choose_model, default_image_size
from imgclf.models.backbones import (BACKBONES, WeightsError, find_backbone_layer, get_backbone, set_trainable,
                                     weights_cache_dir)
from imgclf.runs import RunError

# The `preprocess_input` each backbone's model must reproduce inside itself.
PREPROCESS_INPUT = {
    "mobilenet_v2": keras.applications.mobilenet_v2.preprocess_input,
    "mobilenet_v3_small": keras.applications.mobilenet_v3.preprocess_input,
    "mobilenet_v3_large": keras.applications.mobilenet_v3.preprocess_input,
    "efficientnet_b0": keras.applications.efficientnet.preprocess_input,
    "efficientnet_v2_b0": keras.applications.efficientnet_v2.preprocess_input,
    "resnet50_v2": keras.applications.resnet_v2.preprocess_input,
    "densenet121": keras.applications.densenet.preprocess_input,
    "convnext_tiny": keras.applications.convnext.preprocess_input,
}


def calibrated_weights(backbone, spec: ImageSpec, path, seed: int = 0):
    """Saves random weights whose batch-norm statistics fit random images, so inference-mode features are not zero.

    Random weights with batch-norm statistics left at their initial values
    (mean 0, variance 1) shrink every feature to about 1e-11, and no head can
    learn from them. One training-mode pass with momentum 0 sets each
    statistic to the batch's, as a pretrained network's would be.
    """
    model = backbone.constructor(input_shape=(spec.height, spec.width, 3), include_top=False, weights=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    images = np.random.default_rng(seed).integers(0, 256, size=(16, spec.height, spec.width, 3)).astype("float32")
    model(images / 127.5 - 1.0, training=True)
    model.save_weights(path)
    return path


@pytest.fixture
def keras_cache():
    """The session's empty Keras weights cache (conftest points KERAS_HOME at a temporary folder)."""
    folder = weights_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    yield folder
    for path in set(folder.iterdir()) - before:
        path.unlink()


def test_every_spec_lists_the_registered_backbones():
    names = [row["name"] for row in imgclf.list_models()]
    assert names[:3] == ["mlp", "cnn", "small_cnn"]
    for expected in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                     "efficientnet_v2_b0", "resnet50_v2", "densenet121", "convnext_tiny"):
        assert expected in names


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.name)
def test_backbone_builds_takes_uint8_and_loads_in_safe_mode(backbone, tmp_path):
    spec = ImageSpec(32, 32, 3)
    model = build_model(ModelConfig(name=backbone.name, weights="none"), spec, 3)
    assert model.input_shape == (None, 32, 32, 3)
    assert find_backbone_layer(model).count_params() == backbone.parameters
    assert "Lambda" not in {layer.__class__.__name__ for layer in model.layers}
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    # Called eagerly: tracing a predict function of the larger backbones takes longer than the rest of the test.
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)), probabilities,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.name)
def test_scaling_inside_the_model_matches_keras_preprocess_input(backbone):
    model = build_model(ModelConfig(name=backbone.name, weights="none"), ImageSpec(32, 32, 3), 2)
    features = find_backbone_layer(model)
    before_backbone = keras.Model(model.inputs, model.layers[model.layers.index(features) - 1].output)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    expected = PREPROCESS_INPUT[backbone.name](images.astype("float32").copy())
    np.testing.assert_allclose(before_backbone.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_grey_images_are_repeated_to_rgb_inside_the_model():
    model = build_model(ModelConfig(name="mobilenet_v2", weights="none"), ImageSpec(32, 32, 1), 4)
    assert model.input_shape == (None, 32, 32, 1)
    grey = np.full((1, 32, 32, 1), 200, dtype=np.uint8)
    rgb = keras.Model(model.inputs, model.get_layer("grey_to_rgb").output).predict(grey, verbose=0)
    assert rgb.shape == (1, 32, 32, 3) and np.all(rgb == 200)
    assert model.predict(grey, verbose=0).shape == (1, 4)


def test_too_small_images_are_refused_with_the_minimum():
    with pytest.raises(ValueError, match=r"at least 32x32.*image_size=\(28, 28\).*--image-size 32"):
        build_model(ModelConfig(name="efficientnet_b0", weights="none"), ImageSpec(28, 28, 1), 10)


def test_a_size_below_the_minimum_or_weights_of_another_backbone_fail_before_the_folder_is_read(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=4)
    other = calibrated_weights(get_backbone("mobilenet_v3_small"), ImageSpec(32, 32, 3), tmp_path / "v3.weights.h5")
    with pytest.raises(ValueError, match=r"mobilenet_v2 needs images of at least 32x32 pixels\. Received: "
                                         r"image_size=\(31, 31\); pass --image-size 32 or larger\."):
        imgclf.train(data, model="mobilenet_v2", weights="none", image_size=31, epochs=1, out=tmp_path / "run")
    with pytest.raises(WeightsError, match=f"{other} does not hold weights of mobilenet_v2"):
        imgclf.train(data, model="mobilenet_v2", weights=str(other), image_size=32, epochs=1, out=tmp_path / "run")
    assert capsys.readouterr().out == ""  # no class table: the folder was not scanned
    assert not (tmp_path / "run").exists() and not (tmp_path / "xdg-cache").exists()


def test_scratch_models_refuse_pretrained_weights(tmp_path):
    with pytest.raises(ValueError, match="cnn is trained from scratch.*weights='imagenet'"):
        choose_model(ModelConfig(name="cnn", weights="imagenet"))
    # The run of a network trained from scratch has no backbone to reuse, whatever --model says.
    (tmp_path / "config.yaml").write_text("model:\n  name: small_cnn\n")
    with pytest.raises(ValueError, match="small_cnn is trained from scratch"):
        choose_model(ModelConfig(weights=f"run:{tmp_path}"))


def test_imagenet_weights_come_from_the_keras_cache(keras_cache, tmp_path):
    # MobileNetV2 passes no file hash to keras.utils.get_file, so any file of the expected name is used as is.
    backbone = get_backbone("mobilenet_v2")
    spec = ImageSpec(96, 96, 3)
    cached = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
    cached.save(keras_cache / "saved.h5")  # Keras' own legacy HDF5 file, the format of the downloads
    os.replace(keras_cache / "saved.h5", keras_cache / backbone.weights_filename(spec))
    assert backbone.weights_filename(spec) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"

    choice = choose_model(ModelConfig())  # auto
    assert (choice.config.name, choice.config.weights) == ("mobilenet_v2", "imagenet")
    assert str(keras_cache) in choice.reason
    assert default_image_size(choice.config) == (96, 96)
    model = build_model(choice.config, spec, 3)
    for loaded, saved in zip(find_backbone_layer(model).get_weights(), cached.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


def test_missing_imagenet_weights_fail_before_any_image_is_decoded(keras_cache, tmp_path, monkeypatch):
    # A proxy on a closed port makes the download fail at once, whatever network the machine has.
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    data = make_class_folder(tmp_path / "data", per_class=4)
    with pytest.raises(WeightsError) as error:
        imgclf.train(data, model="mobilenet_v2", weights="imagenet", image_size=(96, 96), epochs=1,
                     out=tmp_path / "run", verbose=0, progress=False)
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert f"{keras_cache}{os.sep}" in message and "--weights none" in message
    cache = tmp_path / "xdg-cache" / "imgclf"
    assert not cache.exists() or not list(cache.glob("*.npy"))  # nothing was decoded
    assert not (tmp_path / "run").exists()


def test_a_damaged_cached_weights_file_is_named_as_damaged(keras_cache, monkeypatch):
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # the download fails at once
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    spec = ImageSpec(224, 224, 3)
    damaged = keras_cache / get_backbone("mobilenet_v3_small").weights_filename(spec)  # Keras checks its hash
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))  # a copy cut short
    with pytest.raises(WeightsError, match=r"was incomplete or damaged \(its hash is not the one Keras expects\), "
                                           r"so Keras removed it, and downloading it again failed"):
        build_model(ModelConfig(name="mobilenet_v3_small", weights="imagenet"), spec, 3)


def test_auto_without_cached_weights_trains_small_cnn_and_records_why(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6)
    run = imgclf.train(data, epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    assert run.config().model.name == "small_cnn"
    assert run.config().model.weights == "none"
    record = json.loads(run.environment_path.read_text())["model"]
    assert record["requested"] == "auto" and "no ImageNet weights" in record["reason"]


@pytest.mark.slow
def test_run_weights_reuse_the_backbone_of_an_earlier_run(tmp_path):
    pretrain = make_class_folder(tmp_path / "pretrain", per_class=6, size=32, classes=["circle", "square", "triangle"])
    first = imgclf.train(pretrain, model="mobilenet_v3_small", weights="none", image_size=(32, 32), epochs=1,
                         out=tmp_path / "first", verbose=0, progress=False)
    small = make_class_folder(tmp_path / "small", per_class=6, size=32, classes=["circle", "square"])
    manifest = imgclf.scan(small, progress=False)
    weights = f"run:{first.path}"
    choice = choose_model(ModelConfig(weights=weights))
    assert choice.config.name == "mobilenet_v3_small"
    assert default_image_size(choice.config) == (32, 32)
    model = build_model(choice.config, ImageSpec(32, 32, 3), len(manifest.classes))
    assert model.output_shape == (None, 2)
    trained = find_backbone_layer(first.load_model())
    for copied, original in zip(find_backbone_layer(model).get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(copied, original)
    with pytest.raises(WeightsError, match="holds a mobilenet_v3_small model, not mobilenet_v2"):
        build_model(ModelConfig(name="mobilenet_v2", weights=weights), ImageSpec(32, 32, 3), 2)
    with pytest.raises(WeightsError, match=r"trained at image size \(32, 32\)"):
        build_model(choice.config, ImageSpec(64, 64, 3), 2)


def test_fine_tuning_changes_only_unfrozen_layers_and_keeps_batch_norm_statistics(tmp_path):
    backbone = get_backbone("mobilenet_v2")
    spec = ImageSpec(32, 32, 3)
    weights = calibrated_weights(backbone, spec, tmp_path / "backbone.weights.h5")
    model = build_model(ModelConfig(name="mobilenet_v2", weights=str(weights)), spec, 3)
    features = find_backbone_layer(model)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, size=32)

    def snapshot():
        return {layer.name: [w.copy() for w in layer.get_weights()] for layer in features.layers}

    def changed(before, after):
        return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}

    set_trainable(model, backbone, "none")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    head = model.get_layer("probabilities").get_weights()[0].copy()
    start = snapshot()
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    assert changed(start, snapshot()) == set()
    assert not np.array_equal(head, model.get_layer("probabilities").get_weights()[0])

    blocks = backbone.blocks(features)
    top_two = {layer.name for block in blocks[-2:] for layer in block}
    set_trainable(model, backbone, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    start = snapshot()
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    moved = changed(start, snapshot())
    assert moved and moved <= top_two
    batch_norm = {layer.name for layer in features.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert not moved & batch_norm  # neither the statistics nor scale and offset
    assert {"Conv_1", "block_16_project"} <= moved  # the last block and the layers after it


@pytest.mark.slow
def test_fine_tuning_runs_two_phases_in_one_history_and_resumes_in_phase_two(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=8, size=32)
    weights = calibrated_weights(get_backbone("mobilenet_v3_small"), ImageSpec(32, 32, 3), tmp_path / "b.weights.h5")
    options = dict(model="mobilenet_v3_small", weights=str(weights), freeze_epochs=1, batch_size=8, schedule="constant",
                   verbose=0, progress=False)
    run = imgclf.train(data, epochs=2, out=tmp_path / "run", **options)
    cfg = run.config()
    assert (cfg.train.freeze_epochs, cfg.train.unfreeze, cfg.train.fine_tune_lr) == (1, "all", 1e-4)
    state = json.loads((run.checkpoints / "state.json").read_text())
    assert (state["epoch"], state["phase"]) == (1, "fine_tune")

    run.model_path.unlink()  # as a run killed after its second epoch leaves it
    run = imgclf.train(data, epochs=3, out=run.path, resume=True, **options)
    with open(run.history_path) as handle:
        rows = list(__import__("csv").DictReader(handle))
    assert [(row["epoch"], row["phase"], float(row["learning_rate"])) for row in rows] == [
        ("0", "head", 1e-3), ("1", "fine_tune", 1e-4), ("2", "fine_tune", 1e-4)]
    last = keras.saving.load_model(run.checkpoints / "last.keras")
    assert find_backbone_layer(last).trainable
    steps = int(np.ceil(len(run.manifest().split("train")) / 8))
    # The optimizer of phase two was restored, not rebuilt: it counts the steps of both its epochs.
    assert int(last.optimizer.iterations) == 2 * steps


def test_resuming_with_other_phase_settings_is_refused_and_config_yaml_keeps_the_runs_own(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=4, size=32, classes=["circle", "square"])
    weights = calibrated_weights(get_backbone("mobilenet_v3_small"), ImageSpec(32, 32, 3), tmp_path / "b.weights.h5")
    options = dict(model="mobilenet_v3_small", weights=str(weights), batch_size=8, verbose=0, progress=False)
    run = imgclf.train(data, epochs=1, out=tmp_path / "run", **options)  # the head phase only
    run.model_path.unlink()  # as a run killed after its first epoch leaves it
    saved = run.config_path.read_text()
    for changed, started in (({"unfreeze": 1}, "train.unfreeze='all'"), ({"freeze_epochs": 2}, "train.freeze_epochs=1"),
                             ({"fine_tune_lr": 1e-3}, "train.fine_tune_lr=0.0001")):
        key, value = next(iter(changed.items()))
        with pytest.raises(RunError, match=rf"Cannot resume .* with train\.{key}={value!r}: the run was "
                                                       rf"started with {started}\. Resume without changing it"):
            imgclf.train(data, epochs=2, out=run.path, resume=True, **changed, **options)
    assert run.config_path.read_text() == saved


@pytest.mark.slow
def test_a_run_from_a_relative_run_dir_records_it_absolute_and_resumes_after_the_source_moved(tmp_path, monkeypatch):
    data = make_class_folder(tmp_path / "data", per_class=4, size=32, classes=["circle", "square"])
    options = dict(batch_size=8, verbose=0, progress=False)
    monkeypatch.chdir(tmp_path)
    imgclf.train(data, model="mobilenet_v3_small", weights="none", image_size=32, epochs=1, out="source", **options)
    run = imgclf.train(data, weights="run:  source", epochs=1, out=tmp_path / "run", **options)  # spaces: a typo
    assert run.config().model.weights == f"run:{tmp_path / 'source'}"
    run.model_path.unlink()  # as a run killed after its first epoch leaves it
    (tmp_path / "source").rename(tmp_path / "archived")
    monkeypatch.chdir(tmp_path / "data")
    # The checkpoint holds every weight: the run resumes, from another folder, without its source.
    resumed = imgclf.train(tmp_path / "data", epochs=2, out=tmp_path / "run", resume=True, **options)
    with open(resumed.history_path) as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["head", "fine_tune"]
    with pytest.raises(WeightsError, match=f"--weights run:{tmp_path / 'source'}: Run directory not found"):
        imgclf.train(tmp_path / "data", config=run.config_path, epochs=1, out=tmp_path / "again", **options)


@pytest.mark.slow
def test_a_relative_weights_file_is_recorded_absolute_and_an_older_relative_record_resumes(tmp_path, monkeypatch):
    data = make_class_folder(tmp_path / "data", per_class=4, size=32, classes=["circle", "square"])
    (tmp_path / "wt").mkdir()
    calibrated_weights(get_backbone("mobilenet_v3_small"), ImageSpec(32, 32, 3), tmp_path / "wt" / "b.weights.h5")
    options = dict(model="mobilenet_v3_small", batch_size=8, verbose=0, progress=False)
    monkeypatch.chdir(tmp_path)
    run = imgclf.train(data, weights="wt/b.weights.h5", epochs=1, out="run", **options)
    text = run.config_path.read_text()
    assert f"weights: {tmp_path / 'wt' / 'b.weights.h5'}" in text
    run.model_path.unlink()
    run.config_path.write_text(text.replace(str(tmp_path / "wt" / "b.weights.h5"), "wt/b.weights.h5"))  # as before
    resumed = imgclf.train(data, epochs=2, out="run", resume=True, **options)
    assert resumed.config().model.weights == str(tmp_path / "wt" / "b.weights.h5")
    with open(resumed.history_path) as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_weights_of_another_model_are_refused_in_a_few_lines_with_the_fix(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(tmp_path / "other.weights.h5")
    other.save(tmp_path / "model.keras")
    for path, hint in ((tmp_path / "other.weights.h5", "saved from keras.applications' mobilenet_v2 without its top"),
                       (tmp_path / "model.keras", "pass --weights run:DIR")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(WeightsError, match=f"does not hold weights of mobilenet_v2 .*{hint}") as error:
                build_model(ModelConfig(name="mobilenet_v2", weights=str(path)), ImageSpec(32, 32, 3), 2)
        assert not caught and len(str(error.value)) < 800


def test_phase_settings_beyond_the_run_or_the_backbone_are_noted(tmp_path):
    from imgclf.config import Config, with_options
    from imgclf.phases import resolve_phases
    from imgclf.training import _phase_notes

    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None).save_weights(
        tmp_path / "mnv2.weights.h5")
    cfg = with_options(Config(), model="mobilenet_v2", weights=str(tmp_path / "mnv2.weights.h5"), epochs=2,
                       freeze_epochs=3, unfreeze=1000)
    model = build_model(cfg.model, ImageSpec(32, 32, 3), 2)
    blocks = len(get_backbone("mobilenet_v2").blocks(find_backbone_layer(model))) - 1
    assert _phase_notes(cfg, model) == [
        "freeze_epochs=3 is not below epochs=2: every epoch trains the head only, and the backbone is never fine-tuned",
        f"unfreeze=1000 is more than the {blocks} blocks of mobilenet_v2: fine-tuning trains all of them"]
    assert _phase_notes(with_options(cfg, freeze_epochs=1, unfreeze=2), model) == []
    one_epoch = resolve_phases(with_options(Config(), model="mobilenet_v2", weights=cfg.model.weights, epochs=1),
                               pretrained_backbone=True)
    assert _phase_notes(one_epoch, model) == [
        "freeze_epochs=1 (the default: a fifth of the epochs, at least 1) is not below epochs=1: every epoch trains "
        "the head only, and the backbone is never fine-tuned"]


def test_a_folder_given_as_weights_is_named_as_a_folder(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=4)
    (tmp_path / "wt").mkdir()
    with pytest.raises(WeightsError, match=rf"^--weights {tmp_path / 'wt'} is a folder, not a weights file\. Pass a "
                                           r"\.weights\.h5 file\.$"):
        imgclf.train(data, model="mobilenet_v2", weights=tmp_path / "wt", image_size=32, out=tmp_path / "run")
    (tmp_path / "wt" / "config.yaml").write_text("model:\n  name: mobilenet_v2\n")
    with pytest.raises(WeightsError, match=rf"is a folder, not a weights file\. Pass a \.weights\.h5 file, or "
                                           rf"run:{tmp_path / 'wt'} to start from the imgclf run in it\.$"):
        imgclf.train(data, model="mobilenet_v2", weights=tmp_path / "wt", image_size=32, out=tmp_path / "run")
