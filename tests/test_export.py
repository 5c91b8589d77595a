import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf import exporting
from imgclf.cli import main
from imgclf.exporting import ExportCheckError

from conftest import make_class_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small confident model: quantization must not flip its val predictions."""
    root = tmp_path_factory.mktemp("export")
    data = make_class_folder(root / "data", per_class=20)
    return imgclf.train(data, model="mlp", hidden=(16,), epochs=8, image_size=(12, 12),
                        cache_dir=str(root / "cache"), out=root / "run", verbose=0, progress=False)


EXPECTED = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}


@pytest.mark.parametrize("format, quantize", [("keras", "none"), ("savedmodel", "none"), ("tflite", "none"),
                                              ("tflite", "dynamic"), ("tflite", "int8")])
def test_every_format_round_trips_through_its_parity_check(run, tmp_path, format, quantize):
    result = imgclf.export(run, format=format, quantize=quantize, out=tmp_path / "out", progress=False)
    check = result.check
    manifest = run.manifest()  # a small validation split is topped up with test and training images
    assert check.passed and check.split == "val + test + train" and check.images == len(manifest.usable)
    if quantize == "none":
        assert check.metric == "max_abs_difference" and check.max_abs_difference <= 1e-4
    else:
        assert check.metric == "top1_agreement" and check.top1_agreement >= 0.99
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([EXPECTED[format], "labels.json", "preprocessing.json", "README.txt", "export.json"])
    assert result.model_path == tmp_path / "out" / EXPECTED[format] and result.size_bytes > 0
    assert json.loads((tmp_path / "out" / "labels.json").read_text()) == run.classes()
    pre = json.loads((tmp_path / "out" / "preprocessing.json").read_text())
    assert (pre["height"], pre["width"], pre["channels"], pre["resize"], pre["input_dtype"]) == (12, 12, 3, "stretch", "uint8")
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["check"]["passed"] and record["size_bytes"] == result.size_bytes
    assert "check passed" in result.summary() and f"{check.top1_agreement:.2%}" in result.summary()


def test_quantized_tflite_reports_agreement_and_size(run, tmp_path):
    plain = imgclf.export(run, format="tflite", out=tmp_path / "plain", progress=False)
    dynamic = imgclf.export(run, format="tflite", quantize="dynamic", out=tmp_path / "dynamic", progress=False)
    assert dynamic.size_bytes < plain.size_bytes
    assert re.search(r"top-1 agreement \d+\.\d\d% \(required: at least 99%\)", dynamic.summary())
    assert "KiB" in dynamic.summary() or "bytes" in dynamic.summary()


def test_a_failed_check_is_an_error_and_leaves_nothing_behind(run, tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "FLOAT_TOLERANCE", -1.0)  # no model can pass
    out = tmp_path / "out"
    with pytest.raises(ExportCheckError, match="does not predict like .*Nothing was written"):
        imgclf.export(run, format="keras", out=out, progress=False)
    assert list(out.iterdir()) == []


def test_quantizing_a_keras_export_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match="tflite only"):
        imgclf.export(run, format="keras", quantize="int8", out=tmp_path / "out")


def _sixteen_bit(image):
    sixteen = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    assert sixteen.mode == "I;16"
    return sixteen


def _float(image):
    return Image.fromarray(np.asarray(image.convert("L"), np.float32) / 255)


def _transparent(image):
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return rgba


@pytest.mark.parametrize("kind, convert, suffix", [("8-bit", None, ".png"), ("16-bit", _sixteen_bit, ".png"),
                                                   ("float", _float, ".tif"), ("transparent", _transparent, ".png")])
def test_the_readme_example_runs_with_only_litert_and_pillow(run, tmp_path, kind, convert, suffix):
    folder = tmp_path / "out"
    imgclf.export(run, format="tflite", out=folder, progress=False)
    photo = next((run.path.parent / "data" / "square").glob("*.png"))
    if convert is not None:  # the same picture stored another way: imgclf converts it to 8 bits as it trained
        convert(Image.open(photo)).save(tmp_path / f"photo{suffix}")
        photo = tmp_path / f"photo{suffix}"
    shutil.copy(photo, folder / "photo.jpg")  # the README's file name; Pillow reads the content
    readme = (folder / "README.txt").read_text()
    code = readme[readme.index("import json"):readme.index("Several images")]
    # imgclf is kept off the path: the exported folder must be usable without it.
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    label, confidence = result.stdout.split()[-2:]
    expected = imgclf.load(run).predict(photo)[0]
    assert label == run.classes()[int(expected.argmax())]
    assert float(confidence) == pytest.approx(float(expected.max()), abs=1e-4)


def test_cli_export_prints_the_check(run, tmp_path, capsys):
    assert main(["export", str(run.path), "--format", "savedmodel", "--out", str(tmp_path / "sm")]) == 0
    out = capsys.readouterr().out
    assert "check passed: largest probability difference" in out and "saved_model" in out


def test_cli_export_failed_check_exits_1(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exporting, "QUANTIZED_AGREEMENT", 1.5)  # no model can pass
    assert main(["export", str(run.path), "--format", "tflite", "--quantize", "dynamic", "--out", str(tmp_path / "q")]) == 1
    assert "error: The exported tflite model" in capsys.readouterr().err
    assert list((tmp_path / "q").iterdir()) == []
