"""Augmentation: presets, pipelines from YAML files, --no-flip, and the same batches from the same seed."""

import concurrent.futures
import dataclasses

import albumentations as A
import numpy as np
import pytest
import yaml

from imgclf.augment import (MIRRORS, PRESETS, AugmentError, apply_augment, augment_to_yaml,
                            build_augment, check_augment, pin_augment)
from imgclf.config import AugmentConfig, Config, ConfigError, load_config, with_options
from imgclf.pipeline import ImageBatches, SplitImages


def images(count=12, size=24, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), dtype=np.uint8)


def names(pipeline):
    """Class names of every transform of a pipeline, nested ones included."""
    found = []
    for transform in pipeline.transforms:
        found.append(type(transform).__name__)
        if isinstance(transform, A.BaseCompose):
            found += names(transform)
    return found


def test_yaml_file_round_trip_gives_identical_output_for_a_fixed_seed(tmp_path):
    batch = images()
    for preset in PRESETS[1:]:
        path = tmp_path / f"{preset}.yaml"
        path.write_text(augment_to_yaml(build_augment(preset)))
        expected = apply_augment(build_augment(preset, seed=7), batch)
        assert np.array_equal(apply_augment(build_augment(path, seed=7), batch), expected), preset
        assert np.array_equal(apply_augment(build_augment(str(path), seed=7), batch), expected), preset
        assert not np.array_equal(apply_augment(build_augment(path, seed=8), batch), expected), preset
        assert augment_to_yaml(build_augment(path)) == path.read_text()


def test_a_hand_written_yaml_file_uses_each_class_default_where_p_is_left_out(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text("transform:\n"
                    "  __class_fullname__: Compose\n"
                    "  transforms:\n"
                    "  - {__class_fullname__: Affine, rotate: [-5, 5], p: 0.9}\n"
                    "  - {__class_fullname__: OneOf, transforms: [{__class_fullname__: Blur}, {__class_fullname__: VerticalFlip}]}\n"
                    "  - __class_fullname__: ToGray\n")
    pipeline = build_augment(path, seed=0)
    assert names(pipeline) == ["Affine", "OneOf", "Blur", "VerticalFlip", "ToGray"]
    assert pipeline.transforms[0].p == 0.9 and pipeline.transforms[2].p == A.ToGray().p
    assert apply_augment(pipeline, images(4)).shape == (4, 24, 24, 3)


def test_a_single_transform_at_the_top_is_wrapped_in_a_compose(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("__class_fullname__: HorizontalFlip\np: 1.0\n")
    pipeline = build_augment(path)
    assert isinstance(pipeline, A.Compose) and names(pipeline) == ["HorizontalFlip"]
    batch = images(2)
    assert np.array_equal(apply_augment(pipeline, batch), batch[:, :, ::-1])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["transform"]["transforms"][1].update(__class_fullname__="Afine"),
     "unknown transform 'Afine' at transform.transforms[1]. Did you mean Affine?"),
    (lambda d: d["transform"]["transforms"][1].update(rotation=[-5, 5]),
     "Affine (transform.transforms[1]): unknown argument 'rotation'. Valid arguments of Affine: scale,"),
    (lambda d: d["transform"]["transforms"][1].update(scale="big"),
     "Affine (transform.transforms[1]): invalid argument scale: Input should be a valid tuple. Received: scale='big'"),
    (lambda d: d["transform"]["transforms"][2].update(p=1.5),
     "RandomBrightnessContrast (transform.transforms[2]): invalid argument p: Input should be less than or equal to 1"),
    (lambda d: d["transform"].update(transforms={"__class_fullname__": "Blur"}),
     "Compose (transform): transforms must be a list of transforms"),
    (lambda d: d["transform"]["transforms"].append("Blur"),
     "transform.transforms[3] must be a mapping that names its transform in __class_fullname__"),
    (lambda d: d["transform"]["transforms"].append({"__class_fullname__": "Lambda", "name": "mine"}),
     "transform.transforms[3] is a Lambda transform, which holds Python code"),
    (lambda d: d["transform"]["transforms"].append({"__class_fullname__": "ReplayCompose",
                                                    "transforms": [{"__class_fullname__": "HorizontalFlip"}]}),
     "ReplayCompose (transform.transforms[3]): ReplayCompose records each call's parameters to replay them on other "
     "images, which training never does. Use Compose."),
    (lambda d: d.update(transforms=[]), "unknown top-level key 'transforms'. Valid keys: transform, __version__"),
    (lambda d: d["transform"].update(p=5), "Compose (transform): invalid argument p: Input should be a number from 0 "
                                           "to 1. Received: p=5"),
    (lambda d: d["transform"]["transforms"].append({"__class_fullname__": "OneOf", "p": -0.5, "transforms": []}),
     "OneOf (transform.transforms[3]): invalid argument p: Input should be a number from 0 to 1. Received: p=-0.5"),
    (lambda d: d["transform"]["transforms"].append({"__class_fullname__": "SomeOf", "n": 1, "p": "often",
                                                    "transforms": []}),
     "SomeOf (transform.transforms[3]): invalid argument p: Input should be a number from 0 to 1. Received: p='often'"),
])
def test_an_invalid_yaml_file_names_the_file_the_transform_and_the_argument(tmp_path, mutate, message):
    values = yaml.safe_load(augment_to_yaml(build_augment("standard")))
    mutate(values)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    with pytest.raises(AugmentError) as raised:
        build_augment(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_a_run_file_and_albumentations_save_read_back_for_transforms_that_record_parent_arguments(tmp_path):
    # A.to_dict writes the arguments these classes inherit (padding, approximation, balanced_scale, fill).
    pipeline = A.Compose([A.PadIfNeeded(20, 20, p=1), A.RandomCrop(16, 16, p=1), A.RGBShift(r_shift_limit=5),
                          A.SafeRotate(limit=7), A.TimeMasking(), A.FrequencyMasking()])
    run_file = tmp_path / "augment.yaml"
    run_file.write_text(augment_to_yaml(pipeline))
    assert augment_to_yaml(build_augment(run_file)) == run_file.read_text()
    saved = tmp_path / "saved.yaml"
    A.save(pipeline, str(saved), data_format="yaml")
    assert augment_to_yaml(build_augment(saved)) == augment_to_yaml(pipeline)
    # An inherited argument the class sets itself cannot be given another value.
    run_file.write_text(run_file.read_text().replace("padding: 0", "padding: 5", 1))
    with pytest.raises(AugmentError) as raised:
        build_augment(run_file)
    assert str(raised.value).startswith(
        f"{run_file}: PadIfNeeded (transform.transforms[0]): argument 'padding' is set by PadIfNeeded from its own "
        "arguments (to 0). Received: padding=5. Leave it out, or set it through min_height, min_width,")


@pytest.mark.parametrize("text, message", [
    ("- __class_fullname__: Blur\n", "an augmentation pipeline must be a mapping with a 'transform' key"),
    ("just words\n", "an augmentation pipeline must be a mapping with a 'transform' key (the format of a run's augment.yaml). Received: 'just words'"),
    ("", "an augmentation pipeline must be a mapping with a 'transform' key (the format of a run's augment.yaml). Received: None"),
    ("preset: standard\n", "no 'transform' key"),
    ("transform: [\n", "is not valid YAML"),
    ("transform:\n  __class_fullname__: Compose\n  transforms: []\n  transforms: []\n", "the key 'transforms' is given twice (lines 3 and 4)"),
])
def test_a_file_that_is_not_a_pipeline_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AugmentError, match=str(path)) as raised:
        build_augment(path)
    assert message in str(raised.value)


def test_unknown_preset_and_missing_file_say_what_is_accepted(tmp_path):
    with pytest.raises(AugmentError, match="Unknown augmentation preset 'strong'. Valid presets: auto, none, light, "
                                           "standard, heavy; or the path of a YAML file"):
        build_augment("strong")
    with pytest.raises(AugmentError, match="Augmentation file not found: .*missing.yaml"):
        build_augment(tmp_path / "missing.yaml")
    assert issubclass(AugmentError, ConfigError)  # the command line reports it as an error, without a traceback


def test_no_flip_removes_mirrors_from_presets_and_files_at_any_depth(tmp_path):
    for preset in PRESETS:
        kept, removed = names(build_augment(preset)), names(build_augment(preset, flip=False))
        assert not set(removed) & set(MIRRORS)
        assert removed == [name for name in kept if name not in MIRRORS]
    assert "HorizontalFlip" in names(build_augment("standard"))
    path = tmp_path / "mirrors.yaml"
    path.write_text(augment_to_yaml(A.Compose([
        A.HorizontalFlip(), A.Transpose(), A.Blur(),
        A.OneOf([A.VerticalFlip(), A.D4(), A.RandomRotate90()]),
    ])))
    assert names(build_augment(path)) == ["HorizontalFlip", "Transpose", "Blur", "OneOf", "VerticalFlip", "D4",
                                          "RandomRotate90"]
    assert names(build_augment(path, flip=False)) == ["Blur", "OneOf", "RandomRotate90"]
    assert names(build_augment(AugmentConfig(preset=str(path), flip=False))) == ["Blur", "OneOf", "RandomRotate90"]
    # Without flips, a batch that was only ever mirrored stays as it was.
    only_flips = tmp_path / "flips.yaml"
    only_flips.write_text(augment_to_yaml(A.Compose([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)])))
    batch = images(3)
    assert np.array_equal(apply_augment(build_augment(only_flips, flip=False), batch), batch)


def test_a_yaml_file_named_by_a_relative_path_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "aug.yaml").write_text(augment_to_yaml(build_augment("light")))
    monkeypatch.chdir(tmp_path)
    pinned = pin_augment(AugmentConfig(preset="aug.yaml"))
    assert pinned.preset == str(tmp_path / "aug.yaml")
    monkeypatch.chdir("/")
    assert pin_augment(pinned) == pinned  # the run's config.yaml names the file from any folder


def test_flip_and_a_yaml_file_are_recorded_in_the_config(tmp_path):
    path = tmp_path / "aug.yaml"
    path.write_text(augment_to_yaml(build_augment("light")))
    cfg = with_options(Config(), augment=path, flip=False)  # a Path is kept as text
    cfg = cfg.replace(augment=dataclasses.asdict(pin_augment(cfg.augment)))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    loaded = load_config(tmp_path / "config.yaml")
    assert loaded.augment.preset == str(path) and loaded.augment.flip is False
    assert len(loaded.augment.sha256) == 64 and pin_augment(loaded.augment) == loaded.augment
    path.write_text(augment_to_yaml(build_augment("heavy")))
    with pytest.raises(AugmentError, match=r"aug.yaml changed since it was recorded \(sha256 [0-9a-f]{12}, now "):
        pin_augment(loaded.augment)
    # Naming the file again records it as it is now.
    again = with_options(loaded, augment=str(path))
    assert again.augment.sha256 is None and pin_augment(again.augment).sha256 != loaded.augment.sha256
    with pytest.raises(ConfigError, match="sha256"):
        AugmentConfig(preset="standard", sha256="abc")


def test_a_pipeline_that_changes_the_image_size_is_refused_with_the_sizes():
    pipeline = A.Compose([A.RandomCrop(height=8, width=8, p=1)])
    with pytest.raises(AugmentError, match="changed an image of 24x24x3 to 8x8x3; it must keep the size"):
        apply_augment(pipeline, images(2))


def test_a_pipeline_that_turns_or_floats_the_images_is_refused():
    tall = np.zeros((2, 24, 12, 3), np.uint8)
    with pytest.raises(AugmentError, match="changed an image of 24x12x3 to 12x24x3"):  # same pixel count, turned
        apply_augment(A.Compose([A.Transpose(p=1)]), tall)
    with pytest.raises(AugmentError, match="returned float32 pixels; it must return uint8 images .* Leave out "
                                           r"transforms that make floats \(Normalize, ToFloat\)"):
        apply_augment(A.Compose([A.Normalize(p=1)]), images(2))


@pytest.mark.parametrize("transforms, shape, message", [
    ([A.CenterCrop(8, 8)], (16, 16, 3), "CenterCrop (transform.transforms[0]): with it the pipeline changed an image of "
                                        "16x16x3 to 8x8x3; it must keep the size the model sees. Give crops and resizes"),
    ([A.Affine(p=0.5), A.OneOf([A.Blur(), A.Resize(8, 8)], p=0.02)], (16, 16, 3),
     "Resize (transform.transforms[1].transforms[1]): with it the pipeline changed an image of 16x16x3 to 8x8x3"),
    ([A.OneOrOther(transforms=[A.HorizontalFlip(), A.Resize(20, 20)], p=0.99)], (16, 16, 3),  # the first nearly always
     "Resize (transform.transforms[0].transforms[1]): with it the pipeline changed an image of 16x16x3 to 20x20x3"),
    ([A.PadIfNeeded(20, 20, p=1), A.RandomCrop(16, 16, p=0.5)], (16, 16, 3),
     "PadIfNeeded (transform.transforms[0]): with it the pipeline changed an image of 16x16x3 to 20x20x3"),
    ([A.RandomRotate90(p=0.5)], (12, 20, 3),
     "RandomRotate90 (transform.transforms[0]): with it the pipeline changed an image of 12x20x3 to 20x12x3; it must "
     "keep the size the model sees, and this turns a non-square image. Leave out transforms that turn it"),
    ([A.ToRGB(p=1)], (16, 16, 1), "ToRGB (transform.transforms[0]): with it the pipeline changed an image of 16x16x1 "
                                  "to 16x16x3; it must keep the image's 1 channel(s)."),
    ([A.SomeOf([A.Blur(), A.ToFloat()], n=1)], (16, 16, 3),
     "ToFloat (transform.transforms[0].transforms[1]): with it the pipeline returned float32 pixels; it must return "
     "uint8 images"),
    ([A.BBoxSafeRandomCrop(p=0.1)], (16, 16, 3), "BBoxSafeRandomCrop (transform.transforms[0]) failed on a 16x16x3 "
     "image: KeyError: 'bboxes'. Training passes only the image (no bounding boxes, masks or other targets)"),
    ([A.MaskDropout(p=0.1)], (16, 16, 3), "MaskDropout (transform.transforms[0]) failed on a 16x16x3 image"),
    ([A.SelectiveChannelTransform([A.Resize(8, 8)], channels=(0,), p=0.5)], (16, 16, 3),
     "SelectiveChannelTransform (transform.transforms[0]) failed on a 16x16x3 image: ValueError: could not broadcast "
     "input array from shape (8,8) into shape (16,16). Change its arguments, or leave it out."),
])
def test_the_check_names_the_transform_that_breaks_the_image_even_when_it_rarely_fires(tmp_path, transforms, shape,
                                                                                          message):
    path = tmp_path / "aug.yaml"
    path.write_text(augment_to_yaml(A.Compose(transforms)))
    pipeline = build_augment(path, seed=0)
    before = augment_to_yaml(pipeline)
    with pytest.raises(AugmentError) as raised:
        check_augment(pipeline, shape, source=str(path))
    assert str(raised.value).startswith(f"{path}: {message}")
    assert augment_to_yaml(pipeline) == before and pipeline.transforms[0].p == transforms[0].p  # checked on a copy


def test_the_check_passes_presets_and_a_pad_then_crop_that_keeps_the_size(tmp_path):
    for shape in ((16, 16, 3), (16, 16, 1), (12, 20, 3)):
        for preset in PRESETS:
            check_augment(build_augment(preset, channels=shape[-1]), shape, source=preset)
    pad_crop = A.Compose([A.PadIfNeeded(20, 20, p=1), A.RandomCrop(16, 16, p=1), A.HorizontalFlip()])
    check_augment(pad_crop, (16, 16, 3), source="pad-crop.yaml")
    with pytest.raises(AugmentError, match=r"^boxes.yaml: Compose \(transform\) failed on a 16x16x3 image: ValueError"):
        check_augment(A.Compose([A.Blur()], bbox_params=A.BboxParams("pascal_voc", label_fields=["labels"])),
                      (16, 16, 3), source="boxes.yaml")


def test_a_transform_that_breaks_the_size_now_and_then_is_refused_before_the_images_are_decoded(tmp_path, monkeypatch):
    import imgclf
    import imgclf.training
    from conftest import make_class_folder

    # The image size comes from the images: the pipeline is checked after the scan, before the first epoch.
    pipeline = A.Compose([A.OneOf([A.Resize(height=8, width=8)], p=0.05)])
    (tmp_path / "aug.yaml").write_text(augment_to_yaml(pipeline))
    data = make_class_folder(tmp_path / "data", per_class=10)
    decoded = []
    monkeypatch.setattr(imgclf.training, "load_split", lambda *args, **kwargs: decoded.append(args))
    with pytest.raises(AugmentError) as raised:
        imgclf.train(data, model="mlp", hidden=(8,), epochs=3, batch_size=2, augment=str(tmp_path / "aug.yaml"),
                     out=tmp_path / "run", verbose=0, progress=False)
    assert str(raised.value).startswith(f"{tmp_path / 'aug.yaml'}: Resize (transform.transforms[0].transforms[0]): "
                                        "with it the pipeline changed an image of 16x16x3 to 8x8x3")
    assert decoded == [] and not (tmp_path / "run" / "history.csv").exists()


def test_same_seed_gives_the_same_augmented_batches_whatever_the_threads_and_the_order():
    split = SplitImages(images(40), np.arange(40, dtype=np.int32) % 4, entries=[None] * 40)
    pipeline = build_augment("heavy", seed=0)

    def epochs(seed, *, workers=1, reverse=False):
        batches = ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline, seed=seed, workers=workers)
        result = []
        for _ in range(2):
            order = list(range(len(batches)))[::-1 if reverse else 1]
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                got = dict(zip(order, pool.map(batches.__getitem__, order)))
            result.append([got[i] for i in range(len(batches))])
            batches.on_epoch_end()
        return result

    first = epochs(3)
    for other in (epochs(3), epochs(3, workers=4, reverse=True)):
        for epoch_a, epoch_b in zip(first, other):
            for (x_a, y_a), (x_b, y_b) in zip(epoch_a, epoch_b):
                assert np.array_equal(x_a, x_b) and np.array_equal(y_a, y_b)
    # The batches are augmented, differ between epochs, and another seed gives others.
    plain = ImageBatches(split, batch_size=8, shuffle=True, seed=3)
    assert not np.array_equal(first[0][0][0], plain[0][0])
    assert not np.array_equal(first[0][0][0], first[1][0][0])
    assert not np.array_equal(first[0][0][0], epochs(4)[0][0][0])
    # A batch read again (a resumed run reads its epoch again) is the same.
    resumed = ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline, seed=3, epoch=1)
    assert np.array_equal(resumed[2][0], first[1][2][0])
