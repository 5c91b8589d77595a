"""`imgclf train --augment FILE.yaml --no-flip --resize`: recorded in config.yaml, checked before any image is read."""

import hashlib

import albumentations as A
import pytest
import yaml

import imgclf
from conftest import make_class_folder
from imgclf.augment import augment_to_yaml, build_augment
from imgclf.cli import main
from imgclf.runs import RunDir

TINY = ["--model", "mlp", "--hidden", "8", "--epochs", "1", "--image-size", "12"]


def test_train_with_a_yaml_file_records_it_and_refuses_it_once_edited(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=6)
    mine = tmp_path / "mine.yaml"
    mine.write_text(augment_to_yaml(A.Compose([A.Affine(rotate=(-10, 10), p=0.5), A.RandomBrightnessContrast(p=0.5)])))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--augment", str(mine), "--resize", "pad", *TINY]) == 0
    cfg = RunDir(run).config()
    assert (cfg.augment.preset, cfg.augment.flip, cfg.data.resize) == (str(mine), True, "pad")
    assert cfg.augment.sha256 == hashlib.sha256(mine.read_bytes()).hexdigest()
    saved = yaml.safe_load((run / "config.yaml").read_text())["augment"]
    assert saved == {"preset": str(mine), "flip": True, "sha256": cfg.augment.sha256}
    comparison = imgclf.compare([run])
    assert {name: values for _, name, values in comparison.rows}["augmentation"] == [
        f"{mine} (sha256 {cfg.augment.sha256[:8]})"]
    # The run's augment.yaml is the file's pipeline, ready to be copied, edited and used again.
    assert (run / "augment.yaml").read_text() == augment_to_yaml(build_augment(mine))
    copy = tmp_path / "copy.yaml"
    copy.write_text((run / "augment.yaml").read_text().replace("p: 0.5", "p: 0.25", 1))
    assert build_augment(copy).transforms[0].p == 0.25
    capsys.readouterr()

    mine.write_text(mine.read_text().replace("p: 0.5", "p: 0.9", 1))
    assert main(["train", str(data), "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"Augmentation file {mine} changed since it was recorded" in err and "augment.yaml" in err
    # The file named again is recorded as it is now, which the run's own settings refuse on resume.
    assert main(["train", str(data), "--out", str(run), "--resume", "--augment", str(mine)]) == 1
    err = capsys.readouterr().err
    assert f"Cannot resume {run} with augment.sha256=" in err


def test_a_run_resumed_after_its_augmentation_file_moved_goes_on_with_the_pipeline_it_recorded(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=6)
    mine = tmp_path / "mine.yaml"
    mine.write_text(augment_to_yaml(A.Compose([A.Affine(rotate=(-20, 20), p=0.5), A.RandomBrightnessContrast(p=0.5)])))
    flags = ["--augment", str(mine), "--schedule", "constant", "--model", "mlp", "--hidden", "8", "--image-size", "12"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", str(data), "--out", str(whole), "--epochs", "2", *flags]) == 0
    assert main(["train", str(data), "--out", str(resumed), "--epochs", "1", *flags]) == 0
    mine.rename(tmp_path / "moved.yaml")
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(resumed), "--resume", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"note: {mine} is gone: the run goes on with the pipeline it recorded, {resumed / 'augment.yaml'}" in out
    assert (resumed / "history.csv").read_text() == (whole / "history.csv").read_text()
    assert RunDir(resumed).config().augment == RunDir(whole).config().augment


@pytest.mark.parametrize("body, message", [
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: RandomFlip, p: 0.5}\n",
     "unknown transform 'RandomFlip' at transform.transforms[0]"),
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: Affine, degrees: 10}\n",
     "Affine (transform.transforms[0]): unknown argument 'degrees'"),
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: Affine, rotate: [1, 2, 3]}\n",
     "Affine (transform.transforms[0]): invalid argument rotate: Tuple should have at most 2 items"),
    ("- Affine\n- HorizontalFlip\n", "an augmentation pipeline must be a mapping with a 'transform' key"),
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n"
     "  - {__class_fullname__: HistogramMatching, reference_images: [ref.png], p: 0.5}\n",
     "HistogramMatching (transform.transforms[0]): HistogramMatching matches each image to reference images passed "
     "with it, which training cannot pass, and a run's augment.yaml cannot record. Leave it out."),
    ("transform:\n  __class_fullname__: OneOf\n  transforms:\n  - {__class_fullname__: Blur}\n"
     "  - {__class_fullname__: FDA}\n", "FDA (transform.transforms[1]): FDA matches each image to reference images"),
    ("transform: {__class_fullname__: PixelDistributionAdaptation}\n",
     "PixelDistributionAdaptation (transform): PixelDistributionAdaptation matches each image to reference"),
])
def test_train_refuses_an_invalid_yaml_file_before_reading_images(tmp_path, capsys, body, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(body)
    status = main(["train", str(tmp_path / "not-read-yet"), "--augment", str(bad), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 1
    assert f"imgclf train: error: {bad}: " in err and message in err
    assert "not found" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_train_records_no_flip(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--augment", "standard", "--no-flip", *TINY]) == 0
    assert RunDir(run).config().augment.flip is False
    assert yaml.safe_load((run / "config.yaml").read_text())["augment"]["flip"] is False
    comparison = imgclf.compare([run])
    assert {name: values for _, name, values in comparison.rows}["augmentation"] == ["standard, no flips"]


def test_train_no_flip_leaves_flips_out_of_the_run_pipeline(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=6)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--augment", "standard", "--no-flip", *TINY]) == 0
    assert (run / "augment.yaml").read_text() == augment_to_yaml(build_augment("standard", flip=False))


def test_the_run_trains_the_file_it_hashed_even_if_it_is_edited_or_deleted_after_the_start(tmp_path, monkeypatch):
    import imgclf.training

    data = make_class_folder(tmp_path / "data", per_class=6)
    mine = tmp_path / "mine.yaml"
    started = augment_to_yaml(A.Compose([A.HorizontalFlip(p=0.0)]))
    mine.write_text(started)
    load_split = imgclf.training.load_split

    def edited_then_deleted(manifest, split, *args, **kwargs):
        # The user edits the file for the next experiment while this run decodes its images, then removes it.
        if split == "train":
            mine.write_text(augment_to_yaml(A.Compose([A.VerticalFlip(p=1.0), A.GaussianBlur(p=1.0)])))
        else:
            mine.unlink(missing_ok=True)
        return load_split(manifest, split, *args, **kwargs)

    monkeypatch.setattr(imgclf.training, "load_split", edited_then_deleted)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--augment", str(mine), *TINY]) == 0
    assert not mine.exists()
    assert RunDir(run).config().augment.sha256 == hashlib.sha256(started.encode()).hexdigest()
    assert (run / "augment.yaml").read_text() == started


def test_train_refuses_a_transform_that_breaks_the_image_size_before_the_scan(tmp_path, capsys):
    crop = tmp_path / "crop.yaml"
    crop.write_text(augment_to_yaml(A.Compose([A.HorizontalFlip(), A.OneOf([A.Blur(), A.CenterCrop(8, 8)], p=0.02)])))
    status = main(["train", str(tmp_path / "not-read-yet"), "--augment", str(crop), "--out", str(tmp_path / "run"),
                   "--model", "mlp", "--image-size", "16", "--color-mode", "rgb"])
    err = capsys.readouterr().err
    assert status == 1
    assert (f"imgclf train: error: {crop}: CenterCrop (transform.transforms[1].transforms[1]): with it the pipeline "
            "changed an image of 16x16x3 to 8x8x3; it must keep the size the model sees.") in err
    assert "not found" not in err and not (tmp_path / "run").exists()
