import json
import os
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
from imgclf.images import load_image
from imgclf.manifest import Manifest
from imgclf.runs import RunDir

import badfiles
from conftest import copy_of_run, make_class_folder


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
    assert pre["jpeg_draft"].startswith('image.draft("RGB", (12, 12))')
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
    assert not out.exists()  # the export created it, and removed it again


@pytest.mark.parametrize("quantize, advice", [("dynamic", "Try --quantize none: its weights stay float32."),
                                               ("int8", "Try --quantize dynamic, or --quantize none.")])
def test_a_quantized_export_that_fails_its_check_suggests_a_milder_quantization(run, tmp_path, monkeypatch,
                                                                                quantize, advice):
    monkeypatch.setattr(exporting, "QUANTIZED_AGREEMENT", 1.01)  # no model can pass
    with pytest.raises(ExportCheckError, match=r"top-1 agreement .*" + re.escape(advice) + "$"):
        imgclf.export(run, format="tflite", quantize=quantize, out=tmp_path / "out", progress=False)


def test_a_failed_export_removes_only_the_folders_it_created(run, tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "FLOAT_TOLERANCE", -1.0)
    with pytest.raises(ExportCheckError):
        imgclf.export(run, format="keras", out=tmp_path / "new" / "deploy", progress=False)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(ExportCheckError, match=f"Nothing was written to {kept}"):
        imgclf.export(run, format="keras", out=kept, progress=False)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_quantizing_a_keras_export_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match="tflite only"):
        imgclf.export(run, format="keras", quantize="int8", out=tmp_path / "out")


def _sixteen_bit(image):
    sixteen = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    assert sixteen.mode == "I;16"
    return sixteen


def _thirty_two_bit(image):
    """Depth-map-like values from -5000 to 250000: beyond 16 bits they saturate at 255, below 0 at 0."""
    values = np.asarray(image.convert("L"), np.int32) * 1000 - 5000
    deep = Image.fromarray(values)
    assert deep.mode == "I"
    return deep


def _float(image):
    return Image.fromarray(np.asarray(image.convert("L"), np.float32) / 255)


def _transparent(image):
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return rgba


def _colour_key(image):
    """An RGB PNG whose tRNS chunk makes the colour of its top left pixel transparent."""
    rgb = image.convert("RGB")
    rgb.info["transparency"] = rgb.getpixel((0, 0))
    return rgb


def _grey_level_key(bits):
    """The picture as a grey PNG of `bits` bits a pixel whose tRNS chunk makes a middle level transparent."""
    def convert(image):
        levels = np.asarray(image.convert("L"), np.int64) * (2**bits - 1) // 255
        transparent = levels[0, 0] = (2**bits - 1) // 3
        return _SavedBy(lambda path: badfiles.write(path, badfiles.grey_png_bytes(levels, bits, transparent)))
    return convert


class _SavedBy:
    """A picture that `save` writes with a function of its own, for files Pillow cannot write from an image."""

    def __init__(self, write):
        self.save = write


def _premultiplied(image):
    """Grey and premultiplied alpha: a TIFF that Pillow opens in mode "La" (and cannot write)."""
    grey = image.convert("L")
    la = Image.merge("LA", (grey, Image.linear_gradient("L").resize(grey.size)))
    return _SavedBy(lambda path: badfiles.premultiplied_la_tiff(path, la))


def _gain_map(image):
    """The picture as a JPEG with a second image after it (Pillow's format "MPO"), as phones store an HDR gain map."""
    rgb = image.convert("RGB")
    return _SavedBy(lambda path: rgb.save(path, format="MPO", save_all=True, append_images=[rgb.rotate(90)]))


def _large(image):
    """The picture as a 400x300 photo: imgclf decodes a JPEG this size at 1/8 scale (draft mode) before resizing."""
    pixels = np.asarray(image.convert("RGB").resize((400, 300), Image.Resampling.BILINEAR), np.int16)
    noise = np.random.default_rng(0).integers(-30, 30, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("kind, convert, suffix", [("8-bit", None, ".png"), ("16-bit", _sixteen_bit, ".png"),
                                                   ("32-bit", _thirty_two_bit, ".tif"), ("float", _float, ".tif"),
                                                   ("transparent", _transparent, ".png"),
                                                   ("transparent colour", _colour_key, ".png"),
                                                   ("1-bit transparent level", _grey_level_key(1), ".png"),
                                                   ("4-bit transparent level", _grey_level_key(4), ".png"),
                                                   ("16-bit transparent level", _grey_level_key(16), ".png"),
                                                   ("premultiplied grey", _premultiplied, ".tif"),
                                                   ("gain map", _gain_map, ".jpg"),
                                                   ("large JPEG", _large, ".jpg")])
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
    code += "print(json.dumps(x.tolist()))\nprint(json.dumps([float(p) for p in probabilities]))\n"
    # imgclf is kept off the path: the exported folder must be usable without it.
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    *printed, pixels, probabilities = result.stdout.splitlines()
    label, confidence = printed[-1].split()
    pixels = np.array(json.loads(pixels), np.uint8)[0]
    assert np.array_equal(pixels, load_image(photo, size=(12, 12)))  # the pixels imgclf gives the model
    if kind == "32-bit":  # as preprocessing.json says: shifted right by 8 bits, then clipped to 0..255
        clipped = np.clip(np.asarray(Image.open(photo)).astype(np.int64) >> 8, 0, 255).astype(np.uint8)
        documented = Image.fromarray(clipped).convert("RGB").resize((12, 12), Image.Resampling.BILINEAR)
        assert np.array_equal(pixels, np.asarray(documented))
    expected = imgclf.load(run).predict([photo])[0]
    assert label == run.classes()[int(expected.argmax())]
    assert float(confidence) == pytest.approx(float(expected.max()), abs=1e-4)
    assert np.max(np.abs(np.array(json.loads(probabilities)) - expected)) <= 1e-4


def test_cli_export_prints_the_check(run, tmp_path, capsys):
    assert main(["export", str(run.path), "--format", "savedmodel", "--out", str(tmp_path / "sm")]) == 0
    out = capsys.readouterr().out
    assert "check passed: largest probability difference" in out and "saved_model" in out


def test_cli_export_failed_check_exits_1(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exporting, "QUANTIZED_AGREEMENT", 1.5)  # no model can pass
    assert main(["export", str(run.path), "--format", "tflite", "--quantize", "dynamic", "--out", str(tmp_path / "q")]) == 1
    assert "error: The exported tflite model" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def _not_called(*args, **kwargs):
    raise AssertionError("the export started its work before checking the output folder")


@pytest.mark.parametrize("format, name, kind", [("keras", "model.keras", "folder"), ("tflite", "model.tflite", "folder"),
                                                ("savedmodel", "saved_model", "folder"),
                                                ("savedmodel", "saved_model", "file"),
                                                ("keras", "labels.json", "folder"), ("keras", "README.txt", "file")])
def test_a_file_or_folder_imgclf_did_not_write_is_refused_before_any_work(run, tmp_path, monkeypatch, format, name, kind):
    out = tmp_path / "deploy"
    out.mkdir()
    target = out / name
    if kind == "folder":
        target.mkdir()
        (target / "important.txt").write_text("keep me")
    else:
        target.write_text("keep me")
    monkeypatch.setattr(RunDir, "load_model", _not_called)
    with pytest.raises(FileExistsError) as raised:
        imgclf.export(run, format=format, out=out, progress=False)
    assert str(raised.value) == (f"{target} is a {kind} that imgclf export did not write ({out}: no export.json); "
                                 "choose another --out, or move it away")
    assert [p.name for p in out.iterdir()] == [name]
    assert (target / "important.txt" if kind == "folder" else target).read_text() == "keep me"


def test_cli_export_names_a_saved_model_file_in_the_way(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "d3"
    out.mkdir()
    (out / "saved_model").write_text("x")
    monkeypatch.setattr(RunDir, "load_model", _not_called)
    assert main(["export", str(run.path), "--format", "savedmodel", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"imgclf export: error: {out / 'saved_model'} is a file that imgclf export did not write")
    assert ".export-" not in err and len(err.splitlines()) == 1
    assert (out / "saved_model").read_text() == "x"


def test_an_earlier_export_is_replaced_by_one_consistent_export(run, tmp_path):
    out = tmp_path / "deploy"
    imgclf.export(run, format="savedmodel", out=out, progress=False)
    (out / "notes.txt").write_text("mine")  # not a name an export writes: left alone
    result = imgclf.export(run, format="keras", out=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.keras", "labels.json", "preprocessing.json",
                                                            "README.txt", "export.json", "notes.txt"])
    assert json.loads((out / "export.json").read_text())["format"] == "keras"
    assert f"replaced an earlier export in {out}: removed saved_model/" in result.summary().splitlines()
    again = imgclf.export(run, format="tflite", out=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.tflite", "labels.json", "preprocessing.json",
                                                            "README.txt", "export.json", "notes.txt"])
    assert f"replaced an earlier export in {out}: removed model.keras" in again.summary().splitlines()
    assert "replaced an earlier export" not in imgclf.export(run, format="keras", out=tmp_path / "new",
                                                             progress=False).summary()


def test_an_earlier_export_with_a_folder_where_it_writes_a_file_is_refused(run, tmp_path):
    out = tmp_path / "deploy"
    imgclf.export(run, format="keras", out=out, progress=False)
    (out / "model.tflite").mkdir()  # imgclf writes model.tflite as a file: this folder is someone else's
    with pytest.raises(FileExistsError, match=r"model\.tflite is a folder that imgclf export did not write"):
        imgclf.export(run, format="tflite", out=out, progress=False)
    assert (out / "model.keras").is_file() and (out / "model.tflite").is_dir()


def test_only_the_model_file_an_earlier_export_wrote_is_replaced(run, tmp_path):
    folder = tmp_path / "run-copy"
    shutil.copytree(run.path, folder)  # exporting into a run's own folder, beside its model.keras
    imgclf.export(folder, format="tflite", out=folder, progress=False)
    with pytest.raises(FileExistsError, match=r"model\.keras is a file that imgclf export did not write \(the "
                                              r"earlier export in .* wrote model\.tflite\)"):
        imgclf.export(folder, format="keras", out=folder, progress=False)
    result = imgclf.export(folder, format="savedmodel", out=folder, progress=False)
    assert "removed model.tflite" in result.summary() and (folder / "model.keras").is_file()
    imgclf.load(folder)  # the run still has its model


@pytest.mark.parametrize("text", ['{"model": "model.keras",', '{"format": "keras"}'])
def test_an_export_json_imgclf_did_not_write_is_named(run, tmp_path, text):
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "export.json").write_text(text)
    with pytest.raises(FileExistsError, match=r"export\.json is a file that imgclf export did not write \(.*: its "
                                              r"export\.json is not one imgclf export wrote\)"):
        imgclf.export(run, format="keras", out=out, progress=False)


def test_tflite_export_keeps_litert_log_lines_off_stderr(run, tmp_path, capfd):
    imgclf.export(run, format="tflite", quantize="int8", out=tmp_path / "q", progress=False)
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "fully_quantize" not in err
    print("stderr works again", file=sys.stderr)
    assert capfd.readouterr().err == "stderr works again\n"


def test_native_log_lines_are_kept_when_the_call_fails(capfd):
    with exporting._native_logs_held():
        os.write(2, b"INFO: dropped on success\n")
    with pytest.raises(RuntimeError, match="conversion failed"):
        with exporting._native_logs_held():
            os.write(2, b"error: the details of a failure\n")
            raise RuntimeError("conversion failed")
    assert capfd.readouterr().err == "error: the details of a failure\n"


@pytest.mark.parametrize("text, message", [
    ('["circle", "square", "triangle", "star"]', "{model} predicts 3 classes but {classes} names 4. The run directory "
                                                 "is inconsistent; train it again."),
    ('["x", "y", "z"]', "{manifest} lists images of ['circle', 'square', 'triangle'], which {classes} does not name "
                        "(it names ['x', 'y', 'z']). The run directory is inconsistent; train it again."),
    ('["circle"', "{classes} is not valid JSON (Expecting ',' delimiter: line 1 column 10 (char 9)); it should hold the "
                  "run's class names, e.g. [\"cat\", \"dog\"]. Restore it from a copy of the run, or train the run again."),
], ids=["more", "renamed", "not_json"])
def test_cli_export_never_ships_labels_that_do_not_fit_the_model(run, tmp_path, capsys, text, message):
    copy = copy_of_run(run, tmp_path / "run")
    copy.classes_path.write_text(text)
    out = tmp_path / "deploy"
    assert main(["export", str(copy.path), "--out", str(out)]) == 1
    expected = message.format(model=copy.model_path, classes=copy.classes_path, manifest=copy.manifest_path)
    assert capsys.readouterr().err == f"imgclf export: error: {expected}\n"
    assert not out.exists()


def test_cli_export_names_a_damaged_model_keras(run, tmp_path, capsys):
    copy = copy_of_run(run, tmp_path / "run")
    copy.model_path.write_bytes(b"")
    out = tmp_path / "deploy"
    assert main(["export", str(copy.path), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"imgclf export: error: {copy.model_path} is damaged: it is not a valid .keras file (it is empty). "
        "Train the run again, or copy model.keras again from where the run was trained.\n")
    assert not out.exists()


def test_cli_export_after_the_data_folder_moved_says_so_with_a_cold_cache(run, tmp_path, capsys):
    copy = copy_of_run(run, tmp_path / "run")
    config = copy.config_path.read_text()
    cache = str(run.path.parent / "cache")
    assert cache in config
    copy.config_path.write_text(config.replace(cache, str(tmp_path / "cold-cache")))  # as on another machine
    data = run.path.parent / "data"
    manifest = Manifest.read_csv(copy.manifest_path)
    for entry in manifest.entries:
        entry.path = str(tmp_path / "moved" / os.path.relpath(entry.path, data))
    manifest.to_csv(copy.manifest_path)
    val = manifest.split("val")
    out = tmp_path / "deploy"
    assert main(["export", str(copy.path), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"imgclf export: error: None of the {len(val)} val images listed in {copy.manifest_path} exist "
        f"(e.g. {val[0].path}): the data folder may have moved, or been deleted, since the run was trained. "
        "Put the data folder back where it was: an export is checked on the run's own images.\n")
    assert not out.exists()


def test_an_export_stopped_by_a_file_size_limit_is_one_line_naming_the_folder(run, tmp_path):
    import resource

    out = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "imgclf", "export", str(run.path), "--format", "savedmodel",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"imgclf export: error: {out}: File too large (a limit on the size of files stopped the write: see `ulimit -f`)")
    assert not out.exists()


def test_the_hidden_folder_of_a_killed_export_is_removed_by_the_next_one(run, tmp_path):
    from imgclf.files import process_tag

    out = tmp_path / "exported"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = process_tag().rsplit("-", 1)[0]
    left = out / f".export-{host}-{int(dead.stdout)}-abcd1234" / "saved_model_for_tflite"
    left.mkdir(parents=True)
    (left / "saved_model.pb").write_bytes(b"\0" * 64)
    imgclf.export(run, format="keras", out=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "export.json", "labels.json", "model.keras",
                                                      "preprocessing.json"]
