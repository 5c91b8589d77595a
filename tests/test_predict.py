import csv
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.cli import main
from imgclf.prediction import UnsafeModelError, columns
from imgclf.runs import RunError

from badfiles import text, truncated_png
from conftest import REPO, make_class_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny grayscale 12x12 model trained on 16x16 RGB images: predict must decode to the run's spec."""
    root = tmp_path_factory.mktemp("predict")
    data = make_class_folder(root / "data", per_class=8)
    return imgclf.train(data, model="mlp", hidden=(16,), epochs=1, image_size=(12, 12), color_mode="grayscale",
                        cache_dir=str(root / "cache"), out=root / "run", verbose=0, progress=False)


@pytest.fixture
def new_images(tmp_path):
    """New images of another size, a broken file, and junk that a scan skips."""
    folder = make_class_folder(tmp_path / "new", per_class=2, size=20, start=50)
    text(folder / "circle" / "notes.png")
    truncated_png(folder / "square" / "cut.png")
    os.symlink("loop.png", folder / "square" / "loop.png")  # a link to itself
    (folder / ".DS_Store").write_bytes(b"\0junk")
    (folder / "square" / "readme.txt").write_text("not an image name")
    (folder / ".hidden").mkdir()
    Image.new("RGB", (9, 9)).save(folder / ".hidden" / "skip.png")
    return folder


def test_predict_folder_with_a_broken_file_gives_every_file_a_row(run, new_images):
    rows = imgclf.predict(run, new_images, progress=False)
    by_name = {os.path.basename(row["path"]): row for row in rows}
    assert len(rows) == 9  # 6 images and 3 broken ones; junk, hidden and .txt files skipped
    assert by_name["notes.png"]["status"] == "not_an_image"
    assert "text" in by_name["notes.png"]["detail"]
    assert by_name["cut.png"]["status"] in ("truncated", "corrupt")
    assert by_name["loop.png"]["status"] == "unreadable" and "symbolic links" in by_name["loop.png"]["detail"]
    assert by_name["notes.png"]["predicted"] is None and by_name["notes.png"]["top_k"] == []
    good = [row for row in rows if row["status"] == "ok"]
    assert len(good) == 6
    classes = run.classes()
    for row in good:
        assert row["predicted"] in classes and row["detail"] == ""
        assert [c for c, _ in row["top_k"]][0] == row["predicted"]
        assert row["confidence"] == row["top_k"][0][1]
        probabilities = [p for _, p in row["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)  # 3 classes, top 3 is all of them


def test_predict_uses_the_run_input_spec_not_the_new_images(run, new_images):
    clf = imgclf.load(run)
    assert (clf.spec.height, clf.spec.width, clf.spec.channels) == (12, 12, 1)
    assert clf.spec.resize == run.config().data.resize
    assert clf.classes == run.classes()


def test_csv_and_json_columns(run, new_images, tmp_path):
    csv_counts = imgclf.predict(run, new_images, out=tmp_path / "p.csv", top_k=2, progress=False)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", "predicted", "confidence", "class_1", "probability_1", "class_2", "probability_2",
                        "status", "detail"] == columns(2)
    assert len(table) == 10 and csv_counts.images == 9 and csv_counts.failed == 3
    bad = next(r for r in table if r[0].endswith("notes.png"))
    assert bad[1:7] == [""] * 6 and bad[7] == "not_an_image"

    json_counts = imgclf.predict(run, new_images, out=tmp_path / "p.json", top_k=2, progress=False)
    records = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert json_counts.images == len(records) == 9
    assert set(records[0]) == {"path", "predicted", "confidence", "top_k", "status", "detail"}
    ok = next(r for r in records if r["status"] == "ok")
    assert [set(item) for item in ok["top_k"]] == [{"class", "probability"}] * 2
    assert sorted(r["path"] for r in records) == sorted(r[0] for r in table[1:])


def test_cli_predict_exit_status_says_whether_an_input_failed(run, new_images, tmp_path, capsys):
    assert main(["predict", str(run.path), str(new_images), "--out", str(tmp_path / "p.csv")]) == 1
    said = capsys.readouterr()
    assert "6 of 9 images predicted, 3 could not be read" in said.out and "3 of 9 inputs failed" in said.err
    good = tmp_path / "good.png"
    shutil.copy(new_images / "circle" / "circle_050.png", good)
    assert main(["predict", str(run.path), str(good), "--format", "json", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)[0]["path"] == str(good)


def test_predict_reads_a_csv_of_paths_and_reports_missing_files(run, new_images, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,note\nnew/circle/circle_050.png,x\nnew/missing.png,y\n", encoding="utf-8")
    rows = imgclf.predict(run, [listing, new_images / "square" / "square_050.png"], progress=False)
    assert [os.path.basename(r["path"]) for r in rows] == ["circle_050.png", "missing.png", "square_050.png"]
    assert [r["status"] for r in rows] == ["ok", "unreadable", "ok"]


def test_a_csv_of_paths_keeps_spaces_that_are_part_of_a_name(run, new_images, tmp_path):
    shutil.copy(new_images / "circle" / "circle_050.png", tmp_path / " lead.png")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n lead.png\nnew/circle/circle_050.png  \n", encoding="utf-8")
    rows = imgclf.predict(run, listing, progress=False)
    assert [r["path"] for r in rows] == [str(tmp_path / " lead.png"), str(tmp_path / "new/circle/circle_050.png")]
    assert [r["status"] for r in rows] == ["ok", "ok"]


def test_a_csv_of_paths_with_a_filename_header_predicts_only_the_files(run, new_images, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    first, second = "new/circle/circle_050.png", "new/square/square_050.png"
    for listing in (f"filename,note\n{first},x\n{second},y\n", f"note,Image\nx,{first}\ny,{second}\n",
                    f"File\n{first}\n{second}\n"):
        (tmp_path / "list.csv").write_text(listing, encoding="utf-8")
        assert main(["predict", str(run.path), "list.csv"]) == 0, listing
        captured = capsys.readouterr()
        lines = captured.out.splitlines()
        assert [line.split(",")[0] for line in lines] == ["path", str(tmp_path / first), str(tmp_path / second)]
        assert [line.split(",")[-2] for line in lines[1:]] == ["ok", "ok"]
        assert "2 of 2 images predicted, 0 could not be read" in captured.err


def test_a_symlink_to_a_folder_that_contains_it_is_not_followed(run, new_images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(new_images / "circle" / "circle_050.png", folder / "one.png")
    os.symlink("..", folder / "up")
    os.symlink(".", folder / "self")
    (tmp_path / "other").mkdir()  # a sibling folder that the loop would reach, besides new_images
    for name in ("square_050.png", "square_051.png"):
        shutil.copy(new_images / "square" / name, tmp_path / "other" / name)
    assert main(["predict", str(run.path), "photos", "--out", "p.csv"]) == 0
    rows = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows] == ["path", "photos/one.png"]
    captured = capsys.readouterr()
    assert "1 of 1 images predicted, 0 could not be read" in captured.out
    for link, target in (("up", tmp_path), ("self", folder)):
        assert (f"note: symlink loop photos/{link} → {target} not followed: it points to a folder that contains it"
                in captured.err.splitlines())
    # A link to a folder elsewhere is still followed, after the folder's own files.
    os.symlink(tmp_path / "other", folder / "shared")
    rows = imgclf.predict(run, "photos", progress=False)
    assert [row["path"] for row in rows][0] == "photos/one.png"
    assert sorted(row["path"] for row in rows)[1:] == ["photos/shared/square_050.png", "photos/shared/square_051.png"]
    # The folder named is walked even when it is such a link itself.
    assert len(imgclf.predict(run, "photos/self", progress=False)) == len(rows)


def test_load_predict_agrees_on_a_path_a_pil_image_and_an_array(run, new_images):
    clf = imgclf.load(run)
    path = new_images / "triangle" / "triangle_051.png"
    image = Image.open(path)
    array = np.asarray(Image.open(path).convert("RGB"))
    by_path, by_image, by_array = clf.predict(path), clf.predict(image), clf.predict(array)
    assert by_path.shape == (1, len(clf.classes))
    np.testing.assert_allclose(by_image, by_path, atol=1e-6)
    np.testing.assert_allclose(by_array, by_path, atol=1e-6)
    both = clf.predict([str(path), image])
    np.testing.assert_allclose(both, np.concatenate([by_path, by_path]), atol=1e-6)
    row = imgclf.predict(run, path, progress=False)[0]
    assert row["predicted"] == clf.classes[int(by_path[0].argmax())]
    assert row["confidence"] == pytest.approx(float(by_path[0].max()), abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict(array.astype(np.float32))
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8)):
        with pytest.raises(ValueError, match=r"at least 1x1 pixels. Received: shape=\(\d, \d"):
            clf.predict(empty)
    with pytest.raises(ValueError, match=r"at least 1x1 pixels. Received: a PIL image of size \(0, 0\)"):
        clf.predict([Image.new("RGB", (0, 0))])


def test_rows_stream_from_an_endless_input(run, new_images):
    # Rows come out while inputs are still being read: nothing waits for the end of the list.
    clf = imgclf.load(run, workers=1)
    endless = itertools.repeat(str(new_images / "circle" / "circle_050.png"))
    rows = list(itertools.islice(clf.predict_files(endless, batch_size=4), 10))
    assert [r["status"] for r in rows] == ["ok"] * 10


def test_a_keras_file_with_a_lambda_layer_is_refused(run, tmp_path):
    import keras

    inputs = keras.Input((12, 12, 1), dtype="uint8")
    x = keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32") / 255.0)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    unsafe = tmp_path / "unsafe"
    shutil.copytree(run.path, unsafe, ignore=shutil.ignore_patterns(".lock"))
    keras.Model(inputs, outputs).save(unsafe / "model.keras")
    with pytest.raises(UnsafeModelError, match="Lambda layer.*safe mode"):
        imgclf.load(unsafe)


def test_a_missing_run_names_the_folder(tmp_path):
    with pytest.raises(RunError, match="not found"):
        imgclf.load(tmp_path / "nope")


MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    import imgclf

    def peak_kib(pid="self"):  # VmHWM: a worker's ru_maxrss would carry its parent's peak over fork and exec
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

    if __name__ == "__main__":
        predictor = imgclf.load(sys.argv[1], workers=2)
        counts = imgclf.predict(predictor, sys.argv[2], out=sys.argv[3], progress=False)
        assert counts.images == int(sys.argv[4]) and counts.failed == 0, counts
        print(peak_kib(), max(peak_kib(pid) for pid in predictor._pool._processes))
""")


@pytest.mark.slow
def test_memory_stays_flat_from_10k_to_60k_files(run, tmp_path):
    # Hard links of a few images make a large folder quickly; every path is a file of its own to predict.
    sources = sorted((run.path.parent / "data").glob("*/*.png"))
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    peaks = {}
    for n in (10_000, 60_000):
        folder = tmp_path / f"files{n}"
        for k in range(n // 1000):
            sub = folder / f"{k:03d}"
            sub.mkdir(parents=True)
            for i in range(1000):
                os.link(sources[(k * 1000 + i) % len(sources)], sub / f"{i:04d}.png")
        result = subprocess.run([sys.executable, str(script), str(run.path), str(folder), str(tmp_path / f"{n}.csv"),
                                 str(n)], capture_output=True, text=True, cwd=REPO, env={**os.environ,
                                 "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr[-2000:]
        own, workers = map(int, result.stdout.split()[-2:])
        peaks[n] = (own, workers)
        shutil.rmtree(folder)
    print(f"peak RSS in KiB (main, largest worker): 10k {peaks[10_000]}, 60k {peaks[60_000]}")
    # Six times the files: the main process may grow by the noise of TensorFlow's allocator, not per file.
    assert peaks[60_000][0] - peaks[10_000][0] < 40 * 1024
    assert peaks[60_000][1] - peaks[10_000][1] < 20 * 1024


def test_max_pixels_lets_predict_read_an_image_larger_than_the_runs_limit(run, new_images, capsys):
    big = new_images / "circle" / "circle_050.png"  # 20x20: 400 pixels
    assert imgclf.predict(run, big, max_pixels=399, progress=False)[0]["status"] == "decompression_bomb"
    assert imgclf.predict(run, big, max_pixels=400, progress=False)[0]["status"] == "ok"
    assert main(["predict", str(run.path), str(big), "--max-pixels", "100"]) == 1
    assert "decompression_bomb" in capsys.readouterr().out
    with pytest.raises(ValueError, match="max_pixels must be a positive number"):
        imgclf.load(run, max_pixels=0)


def _tiny_pngs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def test_an_out_file_that_is_an_input_is_refused_before_it_is_touched(run, new_images, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    text = f"path\n{new_images / 'circle' / 'circle_050.png'}\n"
    listing.write_text(text, encoding="utf-8")
    assert main(["predict", str(run.path), str(listing), "--out", str(listing)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"imgclf predict: error: The output file {listing} is also an input: writing the predictions would replace "
        "it before it is read. Choose another output file (--out).")
    assert listing.read_text(encoding="utf-8") == text
    image = new_images / "circle" / "circle_051.png"
    before = image.read_bytes()
    link = tmp_path / "link.png"
    os.symlink(image, link)
    with pytest.raises(ValueError, match=rf"The output file {link} is also an input \({image}\)"):
        imgclf.predict(run, [new_images / "square" / "square_050.png", image], out=link, progress=False)
    assert image.read_bytes() == before


def test_a_failed_predict_leaves_an_existing_out_file_as_it_was(run, new_images, tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "p.csv"
    out.write_text("old rows\n", encoding="utf-8")

    def inputs_that_fail():
        yield str(new_images / "circle" / "circle_050.png")
        raise RuntimeError("the input list broke")

    with pytest.raises(RuntimeError, match="the input list broke"):
        imgclf.predict(run, inputs_that_fail(), out=out, batch_size=1, progress=False)
    assert out.read_text(encoding="utf-8") == "old rows\n"
    assert os.listdir(tmp_path / "out") == ["p.csv"]  # no temporary file left
    assert imgclf.predict(run, new_images / "triangle", out=out, progress=False).images == 2
    assert out.read_text(encoding="utf-8").startswith("path,predicted,")


def test_a_predict_that_finds_no_image_leaves_an_existing_out_file_as_it_was(run, tmp_path, capsys):
    from imgclf.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "list.csv").write_text("path\n", encoding="utf-8")
    out = tmp_path / "p.csv"
    out.write_text("earlier rows\n", encoding="utf-8")
    for inputs in ("empty", "list.csv"):
        assert main(["predict", str(run.path), str(tmp_path / inputs), "--out", str(out)]) == 1
        assert "no image files found" in capsys.readouterr().err
        assert out.read_text(encoding="utf-8") == "earlier rows\n"
    counts = imgclf.predict(run, tmp_path / "empty", out=tmp_path / "new.csv", progress=False)
    assert (counts.images, counts.path) == (0, None) and sorted(os.listdir(tmp_path)) == ["empty", "list.csv", "p.csv"]


def test_a_csv_list_that_is_not_utf8_is_named_with_its_line_before_any_row(run, new_images, tmp_path, capsys):
    from imgclf.cli import main
    from imgclf.manifest import DatasetError

    listing = tmp_path / "list.csv"
    listing.write_bytes(b"path\n" + str(new_images / "triangle" / "triangle_050.png").encode() + b"\ncaf\xe9.png\n")
    assert main(["predict", str(run.path), str(listing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # not even the header
    assert f"{listing}, line 3: not UTF-8 text (byte 0xe9). Save the CSV as UTF-8" in err
    with pytest.raises(DatasetError, match=r"list\.csv, line 3: not UTF-8"):
        imgclf.predict(run, iter([listing]), progress=False)  # an iterator is read only as it predicts


def test_an_out_link_is_written_through_and_a_device_or_pipe_is_written_to(run, new_images, tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "shared" / "p.csv")
    imgclf.predict(run, new_images / "triangle", out=tmp_path / "link.csv", progress=False)
    assert (tmp_path / "link.csv").is_symlink()
    assert (tmp_path / "shared" / "p.csv").read_text(encoding="utf-8").startswith("path,predicted,")
    import threading

    pipe, received = tmp_path / "pipe", []
    os.mkfifo(pipe)
    reader = threading.Thread(target=lambda: received.append(pipe.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    imgclf.predict(run, new_images / "triangle", out=pipe, progress=False)
    reader.join(timeout=30)
    assert received and received[0].startswith("path,predicted,") and pipe.is_fifo()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_generator_of_inputs_gives_every_row_on_a_terminal(run, new_images, monkeypatch):
    paths = [str(path) for path in sorted((new_images / "circle").glob("*.png"))]
    monkeypatch.setattr(sys, "stderr", _Terminal())  # the progress bar is shown
    rows = imgclf.predict(run, (path for path in paths), workers=1)
    assert [row["path"] for row in rows] == paths
    assert "predict" in sys.stderr.getvalue()  # the bar, without a total
    assert [row["path"] for row in imgclf.predict(run, paths, workers=1)] == paths


def test_load_predict_refuses_a_batch_size_below_1(run):
    clf = imgclf.load(run, workers=1)
    images = [np.zeros((12, 12), np.uint8)] * 3
    for batch_size in (0, -1):
        with pytest.raises(ValueError, match=rf"^batch_size must be at least 1. Received: batch_size={batch_size}$"):
            clf.predict(images, batch_size=batch_size)
    assert clf.predict(images, batch_size=2).shape == (3, 3)


def test_a_jpeg_opened_with_pil_gives_the_probabilities_of_its_path(run, tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:400]
    pixels = np.stack([x * 255 // 400, y * 255 // 300, (x + y) * 127 // 700 + rng.integers(0, 60, (300, 400))], -1)
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    clf = imgclf.load(run, workers=1)
    image = Image.open(path)
    np.testing.assert_array_equal(clf.predict(image), clf.predict(path))
    assert image.size == (400, 300) and image.mode == "RGB"  # the caller's image is not changed
    image.load()  # decoded at full size by the caller: used as it is
    assert clf.predict(image).shape == (1, 3)


def test_a_low_bit_grey_png_opened_with_pil_gives_the_probabilities_of_its_path(run, tmp_path):
    import badfiles

    levels = np.random.default_rng(0).integers(0, 4, size=(24, 24))  # 2 bits; level 1 (85 in 8 bits) transparent
    path = badfiles.write(tmp_path / "key.png", badfiles.grey_png_bytes(levels, 2, transparent=1))
    clf = imgclf.load(run, workers=1)
    image = Image.open(path)
    np.testing.assert_array_equal(clf.predict(image), clf.predict(path))
    assert image.info["transparency"] == 1  # the caller's image is not changed


def test_a_predictions_csv_reads_back_as_an_input_list(run, new_images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(run.path), "new/circle/circle_050.png", "new/triangle", "--out", "out/first.csv"]) == 0
    first = (tmp_path / "out" / "first.csv").read_text(encoding="utf-8")
    assert main(["predict", str(run.path), "out/first.csv", "--out", "second.csv"]) == 0
    assert (tmp_path / "second.csv").read_text(encoding="utf-8") == first
    assert [line.split(",")[0] for line in first.splitlines()][:2] == ["path", "new/circle/circle_050.png"]
    assert first.count(",ok,") == 3
    # A path beside the CSV comes first.
    (tmp_path / "out" / "new" / "circle").mkdir(parents=True)
    shutil.copy(new_images / "square" / "square_050.png", tmp_path / "out" / "new" / "circle" / "circle_050.png")
    rows = imgclf.predict(run, "out/first.csv", progress=False)
    assert rows[0]["path"] == str(tmp_path / "out" / "new" / "circle" / "circle_050.png")


def test_workers_below_1_are_refused_before_any_row(run, new_images, tmp_path, capsys):
    for value in ("0", "-2"):
        with pytest.raises(SystemExit) as exited:
            main(["predict", str(run.path), str(new_images), "--workers", value, "--out", str(tmp_path / "p.csv")])
        assert exited.value.code == 2
        assert "argument --workers: expected a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(ValueError, match=r"workers must be a whole number of at least 1 .*Received: workers=0"):
        imgclf.load(run, workers=0)
    with pytest.raises(ValueError, match=r"Received: workers=-2"):
        imgclf.predict(run, new_images, workers=-2)
    assert imgclf.load(run, workers=1).workers == 1
    assert imgclf.load(run).workers >= 1


def test_load_predict_takes_any_iterable_and_explains_what_it_refuses(run, new_images):
    clf = imgclf.load(run, workers=1)
    path = str(new_images / "circle" / "circle_050.png")
    expected = clf.predict([path, path])
    np.testing.assert_array_equal(clf.predict(p for p in [path, path]), expected)
    np.testing.assert_array_equal(clf.predict(map(str, [path, path])), expected)
    with pytest.raises(TypeError, match="A path must be a str or a pathlib.Path, not bytes"):
        clf.predict(path.encode())
    with pytest.raises(TypeError, match="images must be a file path, a PIL image, a uint8 array or an iterable of "
                                        "them. Received: NoneType"):
        clf.predict(None)
    with pytest.raises(TypeError, match="inputs must be a path .* Received: bytes b'"):
        imgclf.predict(run, path.encode())
    for in_memory in (np.zeros((8, 8, 3), np.uint8), [path, np.zeros((8, 8, 3), np.uint8)], Image.new("RGB", (8, 8))):
        with pytest.raises(TypeError, match=r"For images in memory \(numpy arrays, PIL images\), use "
                                            r"imgclf.load\(run\).predict\(images\). Received: (ndarray|Image)"):
            imgclf.predict(run, in_memory)
    premultiplied = Image.new("La", (20, 20), (128, 255))
    np.testing.assert_array_equal(clf.predict(premultiplied), clf.predict(premultiplied.convert("LA")))


LOOP_SCRIPT = textwrap.dedent("""
    import sys
    import imgclf

    for path in sys.argv[2:] * 4:
        assert imgclf.predict(sys.argv[1], path, workers=1, progress=False)[0]["status"] == "ok"
""")


def test_predicting_in_a_loop_does_not_warn_of_retracing(run, new_images, tmp_path):
    # A fresh process: TensorFlow warns at most twice per traced Python function in a process.
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    paths = [str(path) for path in sorted((new_images / "triangle").glob("*.png"))]
    done = subprocess.run([sys.executable, str(script), str(run.path), *paths], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "retracing" not in done.stderr


def test_max_pixels_applies_to_a_png_of_the_models_size(run, tmp_path):
    path = tmp_path / "plain.png"  # 12x12 grey: the model's input, decoded by OpenCV
    Image.fromarray(np.full((12, 12), 90, np.uint8)).save(path)
    row = imgclf.predict(run, path, max_pixels=100, progress=False)[0]
    assert (row["status"], row["detail"]) == ("decompression_bomb", "144 pixels exceeds max_pixels=100; if the image is "
                                             "sound, --max-pixels 144 (data.max_pixels) accepts it")
    with pytest.raises(imgclf.images.ImageDecodeError, match="144 pixels exceeds max_pixels=100"):
        imgclf.load(run, max_pixels=100).predict(path)
    assert imgclf.predict(run, path, max_pixels=144, progress=False)[0]["status"] == "ok"


def test_ctrl_c_stops_predict_with_one_line_and_no_worker_traceback(run, tmp_path):
    folder = _tiny_pngs(tmp_path / "many", 3000)
    command = [sys.executable, "-m", "imgclf", "predict", str(run.path), str(folder), str(folder), str(folder),
               "--batch-size", "4", "--workers", "2"]
    # A session of its own, as a terminal's foreground group: Ctrl-C signals every process in it.
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        rows = 0
        for _ in process.stdout:  # rows come in flushes of 256, once the workers decode
            rows += 1
            if rows > 300:
                break
        assert rows > 300, process.stderr.read()
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "imgclf predict: interrupted"


def _flip_bytes_inside_the_weights(path):
    """Damages a .keras file as a bad disk or copy does: the zip holds, a CRC check fails."""
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        weights = archive.getinfo("model.weights.h5")
    middle = weights.header_offset + weights.compress_size // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [(_flip_bytes_inside_the_weights, "Bad CRC-32 for file 'model.weights.h5'"),
                                            (lambda path: path.write_bytes(b""), "it is empty")])
def test_cli_predict_names_a_damaged_model_keras_in_one_line(run, new_images, tmp_path, capsys, damage, reason):
    damaged = tmp_path / "damaged"
    shutil.copytree(run.path, damaged, ignore=shutil.ignore_patterns(".lock"))
    damage(damaged / "model.keras")
    assert main(["predict", str(damaged), str(new_images / "circle" / "circle_050.png")]) == 1
    assert capsys.readouterr().err == (
        f"imgclf predict: error: {damaged / 'model.keras'} is damaged: it is not a valid .keras file ({reason}). "
        "Train the run again, or copy model.keras again from where the run was trained.\n")


def test_cli_predict_names_a_classes_json_that_does_not_fit_the_model(run, new_images, tmp_path, capsys):
    edited = tmp_path / "edited"
    shutil.copytree(run.path, edited, ignore=shutil.ignore_patterns(".lock"))
    (edited / "classes.json").write_text('["circle", "square", "triangle", "star"]')
    image = str(new_images / "circle" / "circle_050.png")
    assert main(["predict", str(edited), image]) == 1
    assert capsys.readouterr().err == (
        f"imgclf predict: error: {edited / 'model.keras'} predicts 3 classes but {edited / 'classes.json'} names 4. "
        "The run directory is inconsistent; train it again.\n")
    (edited / "classes.json").write_text('"circle"')
    assert main(["predict", str(edited), image]) == 1
    assert capsys.readouterr().err == (
        f'imgclf predict: error: {edited / "classes.json"} should hold a list of class names, e.g. ["cat", "dog"]; it '
        'holds "circle". Restore it from a copy of the run, or train the run again.\n')


@pytest.mark.parametrize("value", ["0", "-1"])
def test_top_k_below_1_is_a_usage_error_naming_the_flag(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--top-k", value])
    assert stopped.value.code == 2  # as for any other bad flag; 1 means an input could not be predicted
    assert capsys.readouterr().err.endswith("imgclf predict: error: argument --top-k: expected a whole number of at "
                                            f"least 1 (the classes listed per image). Received: '{value}'\n")


def test_an_animated_pil_image_is_used_at_the_frame_it_is_at_and_left_there(tmp_path):
    from PIL import Image

    from imgclf.config import ImageSpec
    from imgclf.prediction import resize_image

    frames = [Image.new("RGB", (8, 8), (100 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image = Image.open(tmp_path / "a.gif")
    image.seek(2)
    pixels = resize_image(image, ImageSpec(8, 8, 3, "stretch"))
    assert tuple(pixels[0, 0]) == (200, 0, 0) and image.tell() == 2


def test_cli_predict_to_a_closed_standard_output_says_to_use_out(run, new_images, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python sets when fd 1 is closed: `imgclf predict RUN DIR >&-`
    assert main(["predict", str(run.path), str(new_images)]) == 1
    assert "error: Standard output is closed, so the rows would be lost: write them to a file with --out FILE." \
        in capsys.readouterr().err


def test_rows_for_an_output_whose_encoding_lacks_a_name_are_refused_with_the_fix(run, new_images, tmp_path):
    image = tmp_path / "café.png"
    shutil.copy(new_images / "circle" / "circle_050.png", image)
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "imgclf", "predict", str(run.path), str(image)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "imgclf predict: error: The encoding of standard output (ascii) cannot hold '\\u00e9' of a class or file name, so "
        "the rows would not name the files: write them to a file with --out FILE (UTF-8), or set "
        "PYTHONIOENCODING=utf-8.")
