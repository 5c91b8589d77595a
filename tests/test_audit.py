import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import imgclf
from badfiles import BAD_FILES
from conftest import make_class_folder


@pytest.fixture
def dirty_folder(tmp_path):
    """Three learnable classes, plus every kind of bad file in class 'circle'."""
    root = make_class_folder(tmp_path / "data", per_class=12)
    for name, (writer, _, _) in BAD_FILES.items():
        writer(root / "circle" / name)
    os.symlink(tmp_path / "gone.jpg", root / "circle" / "dangling.jpg")
    os.symlink("looping.jpg", root / "circle" / "looping.jpg")  # a link to itself: reading it fails with ELOOP
    shutil.copy(root / "square" / "square_000.png", root / "triangle" / "mislabelled.png")
    shutil.copy(root / "square" / "square_001.png", root / "square" / "copy_of_001.png")
    return root


def audit_rows(path):
    with open(path, newline="") as handle:
        return {os.path.basename(row["path"]): row for row in csv.DictReader(handle)}


def test_audit_flags_every_bad_kind(dirty_folder, tmp_path):
    result = imgclf.audit(dirty_folder, out=tmp_path / "audit", progress=False)
    rows = audit_rows(result.csv_path)
    for name, (_, status, problem) in BAD_FILES.items():
        assert (rows[name]["status"], rows[name]["problem"]) == (status, problem), (name, rows[name])
        if status != "ok":
            assert rows[name]["detail"], name
    assert (rows["dangling.jpg"]["status"], rows["dangling.jpg"]["problem"]) == ("error", "unreadable")
    assert (rows["looping.jpg"]["status"], rows["looping.jpg"]["problem"]) == ("error", "unreadable")
    assert "symbolic links" in rows["looping.jpg"]["detail"]
    assert rows["mislabelled.png"]["problem"] == rows["square_000.png"]["problem"] == "label_conflict"
    pair = [rows["copy_of_001.png"], rows["square_001.png"]]
    assert sorted(row["problem"] for row in pair) == ["", "duplicate"]  # the first copy by path is the original
    assert {row["status"] for row in pair} == {"ok", "warning"} and len({row["split"] for row in pair}) == 1
    assert all(row["split"] == "" for row in rows.values() if row["status"] == "error")
    assert all(row["split"] in ("train", "val", "test") for row in rows.values() if row["status"] != "error")


def test_audit_summary_names_problems_and_balance(dirty_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = imgclf.audit("data", progress=False)
    lines = result.summary().splitlines()
    problems = {line.split()[0]: line.split() for line in lines if line.split()[1:2] in (["error"], ["warning"])}
    assert problems["truncated"][:3] == ["truncated", "error", "5"]  # truncated.jpg/.png, rows_missing, header_only, jpeg_signature_only
    assert problems["decompression_bomb"][1:3] == ["error", "1"]
    statuses = [row[1] for row in problems.values()]
    assert statuses == sorted(statuses)  # every error before the first warning
    table = lines.index(next(line for line in lines if line.split()[:2] == ["class", "train"]))
    assert [line.split()[0] for line in lines[table + 1:table + 5]] == ["circle", "square", "triangle", "total"]
    assert lines[table + 4].split()[-1] == str(len(result.manifest.usable))
    assert "imbalance ratio" in lines[table + 5]
    counts = result.class_counts()
    assert counts["square"] == 12 and counts["triangle"] == 12  # the conflicting pair left out, the copy kept
    assert result.imbalance_ratio == pytest.approx(max(counts.values()) / min(counts.values()))


def test_bomb_is_rejected_with_a_configurable_limit(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=3)
    from imgclf.auditing import audit
    from imgclf.images import ImageLimits

    result = audit(root, limits=ImageLimits(max_pixels=100), progress=False)
    assert {e.problem for e in result.manifest.entries} == {"decompression_bomb"}


def test_quarantine_moves_error_files_and_deletes_nothing(dirty_folder, tmp_path):
    before = sorted(p.name for p in dirty_folder.rglob("*") if p.is_file() or p.is_symlink())
    result = imgclf.audit(dirty_folder, quarantine=tmp_path / "quarantine", progress=False)
    moved = sorted(p.name for p in (tmp_path / "quarantine").rglob("*") if p.is_file() or p.is_symlink())
    kept = sorted(p.name for p in dirty_folder.rglob("*") if p.is_file() or p.is_symlink())
    assert sorted(moved + kept) == before
    assert "truncated.jpg" in moved and (tmp_path / "quarantine" / "circle" / "truncated.jpg").exists()
    assert "cmyk.jpg" in kept and "mislabelled.png" in kept  # a label conflict needs a person, not quarantine
    broken = {os.path.basename(e.path) for e in result.errors if e.problem != "label_conflict"}
    assert set(moved) == broken and {"dangling.jpg", "looping.jpg"} <= broken
    assert f"{len(moved)} file(s) with errors moved to {tmp_path / 'quarantine'}" in result.summary()


def test_cross_split_duplicates_are_reported(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root / "train", per_class=6)
    make_class_folder(root / "test", per_class=2, start=50)
    shutil.copy(root / "train" / "circle" / "circle_000.png", root / "test" / "circle" / "leak.png")
    result = imgclf.audit(root, progress=False)
    leaks = result.cross_split_duplicates()
    assert len(leaks) == 1 and any(path.endswith("leak.png") for path in leaks[0][1])
    assert "more than one split" in result.summary()


def test_one_picture_in_other_formats_or_with_other_metadata_is_flagged_as_a_copy(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6)
    picture = Image.open(root / "circle" / "circle_000.png")
    picture.save(root / "circle" / "again.bmp")
    picture.save(root / "circle" / "tagged.png", pnginfo=_text_chunk("source", "camera"))
    picture.save(root / "square" / "mislabelled.tif")
    result = imgclf.audit(root, out=tmp_path / "audit", progress=False)
    rows = audit_rows(result.csv_path)
    assert len({rows[name]["sha1"] for name in ("circle_000.png", "again.bmp", "tagged.png")}) == 3
    for name in ("circle_000.png", "again.bmp", "tagged.png", "mislabelled.tif"):
        assert (rows[name]["status"], rows[name]["problem"]) == ("error", "label_conflict"), rows[name]
        assert rows[name]["detail"].startswith("same pixels under classes circle, square: ")
    assert result.problem_counts() == {"label_conflict": 4}

    os.remove(root / "square" / "mislabelled.tif")
    rows = audit_rows(imgclf.audit(root, out=tmp_path / "audit", progress=False).csv_path)
    assert rows["again.bmp"]["status"] == "ok"  # the first by path is the one kept without a warning
    for name in ("circle_000.png", "tagged.png"):
        assert (rows[name]["status"], rows[name]["problem"]) == ("warning", "duplicate")
        assert rows[name]["detail"] == (f"the same pixels as {root / 'circle' / 'again.bmp'}, in a file with other "
                                        "bytes (another format, metadata or compression)")


def test_jpegs_alike_at_one_eighth_scale_are_copies_only_when_alike_at_full_size(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6)
    blocks = np.random.default_rng(0).integers(60, 190, size=(4, 4, 3))
    flat = np.kron(blocks, np.ones((8, 8, 1))).astype(np.int16)  # 8x8 blocks of one colour each
    rows, columns = np.mgrid[0:32, 0:32]
    checker = np.where((rows + columns) % 2 == 0, 25, -25)[..., None]  # the same mean in every block
    Image.fromarray(flat.astype(np.uint8)).save(root / "circle" / "flat.jpg", quality=95)
    Image.fromarray((flat + checker).astype(np.uint8)).save(root / "circle" / "checkered.jpg", quality=95)
    Image.fromarray(flat.astype(np.uint8)).save(root / "circle" / "flat_noted.jpg", quality=95, comment=b"edited")
    audited = audit_rows(imgclf.audit(root, out=tmp_path / "audit", progress=False).csv_path)
    assert (audited["checkered.jpg"]["status"], audited["flat.jpg"]["status"]) == ("ok", "ok")
    assert (audited["flat_noted.jpg"]["status"], audited["flat_noted.jpg"]["problem"]) == ("warning", "duplicate")
    assert audited["flat_noted.jpg"]["detail"].startswith(f"the same pixels as {root / 'circle' / 'flat.jpg'},")


def test_one_picture_in_two_formats_in_two_given_splits_is_a_leak(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root / "train", per_class=6)
    make_class_folder(root / "test", per_class=2, start=50)
    Image.open(root / "train" / "circle" / "circle_000.png").save(root / "test" / "circle" / "leak.bmp")
    assert imgclf.scan(root, progress=False).cross_split_duplicates() == []  # by the bytes, they differ
    result = imgclf.audit(root, progress=False)
    assert [paths for _, paths in result.cross_split_duplicates()] == [
        [str(root / "test" / "circle" / "leak.bmp"), str(root / "train" / "circle" / "circle_000.png")]]
    assert "1 image(s) appear in more than one split (a leak between splits)" in result.summary()


def _text_chunk(key, value):
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def test_cli_strict_exit_status(dirty_folder, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "imgclf", "audit", str(dirty_folder), "--out", str(tmp_path / "a")]
    loose = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert loose.returncode == 0, loose.stderr
    assert "with errors (left out)" in loose.stdout
    strict = subprocess.run(command + ["--strict"], capture_output=True, text=True, env=env, timeout=300)
    assert strict.returncode == 1
    assert "--strict" in strict.stderr
    clean = make_class_folder(tmp_path / "clean", per_class=3)
    ok = subprocess.run(command[:4] + [str(clean), "--strict"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr


def test_training_on_a_dirty_folder_uses_every_good_image(dirty_folder, tmp_path):
    expected = imgclf.audit(dirty_folder, progress=False).manifest
    good = {e.path: e.split for e in expected.entries if e.usable}
    run = imgclf.train(dirty_folder, model="mlp", hidden=(16,), epochs=1, out=tmp_path / "run", verbose=0,
                       progress=False)
    trained = {e.path: e.split for e in run.manifest().entries if e.usable}
    # Only the audit decodes each JPEG a second time for libjpeg's warnings on damaged data (twice the time).
    data_check_only = {p for p in trained if os.path.basename(p) in ("garbled.jpg", "flipped_byte_progressive.jpg",
                                                                     "flipped_byte_gain_map.jpg")}
    assert len(data_check_only) == 3 and {p: trained[p] for p in trained if p not in data_check_only} == good
    with pytest.raises(imgclf.manifest.DatasetError, match="strict"):
        imgclf.train(dirty_folder, model="mlp", epochs=1, out=tmp_path / "run2", strict=True, verbose=0,
                     progress=False)


def test_file_broken_after_scan_is_skipped_not_fatal(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=10)
    manifest = imgclf.scan(root, progress=False)
    victim = next(e for e in manifest.entries if e.split == "train")
    data = open(victim.path, "rb").read()
    open(victim.path, "wb").write(data[: len(data) // 2])  # broken between scan and training
    run = imgclf.train(manifest, model="mlp", hidden=(16,), epochs=1, out=tmp_path / "run", verbose=0,
                       progress=False)
    entry = next(e for e in run.manifest().entries if e.path == victim.path)
    assert entry.status == "error" and entry.problem == "truncated"


def test_scan_reports_the_warnings_the_audit_finds(dirty_folder):
    scanned = {e.path: (e.status, e.problem) for e in imgclf.scan(dirty_folder, progress=False).entries}
    audited = {e.path: (e.status, e.problem) for e in imgclf.audit(dirty_folder, progress=False).manifest.usable}
    blank = {path for path, (_, problem) in audited.items() if "blank" in problem}
    assert {os.path.basename(path) for path in blank} == {"blank.png", "black.jpg", "clear.png"}  # only pixels show it
    assert {p: scanned[p] for p in audited if p not in blank} == {p: audited[p] for p in audited if p not in blank}
    text = imgclf.scan(dirty_folder, progress=False).summary()
    warnings_line = next(line for line in text.splitlines() if line.startswith("warnings: "))
    assert "cmyk 1" in warnings_line and "alpha 9" in warnings_line and "exif_orientation 2" in warnings_line
    errors_line = next(line for line in text.splitlines() if line.startswith("errors: "))
    # A file cut short inside its header is found by the scan; one cut in its pixels only by decoding.
    assert "not_an_image 5" in errors_line and "truncated 2" in errors_line


def test_train_scans_with_the_configured_limits(tmp_path):
    import badfiles

    root = make_class_folder(tmp_path / "data", per_class=6)
    badfiles.bomb_png(root / "circle" / "huge.png", width=10_000, height=10_000)  # 100 megapixels claimed, 1 stored
    run = imgclf.train(root, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", max_pixels=200_000_000,
                       min_side=20, verbose=0, progress=False)
    entries = {os.path.basename(e.path): e for e in run.manifest().entries}
    assert entries["huge.png"].problem == "truncated"  # under the raised limit, so decoded, and its data is missing
    assert all(e.problem == "too_small" for name, e in entries.items() if name != "huge.png")
    assert run.config().data.max_pixels == 200_000_000


def test_symlink_loop_to_the_dataset_root_keeps_three_classes(tmp_path):
    root = make_class_folder(tmp_path / "photos", per_class=12, classes=["circle", "square", "triangle"])
    os.symlink("..", root / "circle" / "loop")
    result = imgclf.audit(root, out=tmp_path / "audit", progress=False)
    summary = result.summary()
    assert "36 files: 36 ok" in summary and "label_conflict" not in summary
    assert "3 classes; imbalance ratio 1.0" in summary
    assert f"note: symlink loop {root / 'circle' / 'loop'} → {root} not followed" in summary
    assert len(audit_rows(result.csv_path)) == 36
    with open(tmp_path / "audit" / "manifest.csv", newline="") as handle:
        assert not any("/circle/loop/" in row["path"] for row in csv.DictReader(handle))


def test_quarantine_inside_the_dataset_is_refused_and_shared_files_outside_stay(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=4)
    with pytest.raises(ValueError, match="quarantine folder .* is inside the dataset"):
        imgclf.audit(root, quarantine=root / "quarantine", progress=False)
    with pytest.raises(ValueError, match="audit folder .* is inside the dataset .*: the next scan would read it"):
        imgclf.audit(root, out=root / "audit", progress=False)
    assert not (root / "audit").exists()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut")
    os.symlink(shared, root / "circle" / "linked")
    (root / "square" / "own_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut")
    result = imgclf.audit(root, quarantine=tmp_path / "quarantine", progress=False)
    assert (shared / "broken.png").exists() and not (root / "square" / "own_broken.png").exists()
    assert [os.path.basename(p) for p in result.quarantined] == ["own_broken.png"]
    assert "1 file(s) with errors left where they are: they lie outside the dataset folder" in result.summary()
    assert "3 classes; imbalance ratio 1.0 (every class 4 images)" in result.summary()


def test_quarantine_names_csv_paths_outside_the_csv_folder_as_such(tmp_path):
    from badfiles import truncated_png

    make_class_folder(tmp_path / "imgs", per_class=4, classes=["circle", "square"])
    truncated_png(tmp_path / "imgs" / "circle" / "cut.png")
    (tmp_path / "meta").mkdir()
    rows = [f"../imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted((tmp_path / "imgs").rglob("*.png"))]
    (tmp_path / "meta" / "labels.csv").write_text("\n".join(["path,label", *rows]) + "\n")
    result = imgclf.audit(tmp_path / "meta" / "labels.csv", quarantine=tmp_path / "q", progress=False)
    assert any("1 file(s) with errors left where they are" in note and "a CSV path that leaves its folder" in note
               for note in result.manifest.notes)
    assert (tmp_path / "imgs" / "circle" / "cut.png").exists()


def test_quarantined_symlinks_still_lead_to_their_files_and_nothing_is_overwritten(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=4, classes=["circle", "square"])
    (root / "square" / "real_bad.png").write_bytes(b"bad2")
    os.symlink("../square/real_bad.png", root / "circle" / "link_to_bad.png")  # its target is quarantined too
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "outside.png").write_bytes(b"bad3")
    os.symlink("../../elsewhere/outside.png", root / "circle" / "link_outside.png")
    (root / "circle" / "zero.png").write_bytes(b"")
    quarantine = tmp_path / "q" / "deeper"
    (quarantine / "circle").mkdir(parents=True)
    os.symlink("nowhere.png", quarantine / "circle" / "zero.png")  # left by an earlier run: not to be replaced
    result = imgclf.audit(root, quarantine=quarantine, progress=False)
    assert sorted(os.path.relpath(p, quarantine) for p in result.quarantined.values()) == [
        "circle/link_outside.png", "circle/link_to_bad.png", "circle/zero.1.png", "square/real_bad.png"]
    assert (quarantine / "circle" / "link_to_bad.png").read_bytes() == b"bad2"
    assert os.path.realpath(quarantine / "circle" / "link_to_bad.png") == str(quarantine / "square" / "real_bad.png")
    assert (quarantine / "circle" / "link_outside.png").read_bytes() == b"bad3"
    assert os.readlink(quarantine / "circle" / "zero.png") == "nowhere.png"
    assert (quarantine / "circle" / "zero.1.png").read_bytes() == b""


def test_summary_escapes_newlines_and_tabs_in_names(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=4, classes=["circle", "square"])
    (root / "new\nline").mkdir()
    (root / "new\nline" / "bad\tname.png").write_text("notes")
    (root / "empty\ncls").mkdir()
    summary = imgclf.audit(root, progress=False).summary()
    assert f"not_an_image           error         1  {root}/new\\nline/bad\\tname.png" in summary.splitlines()
    assert any(line.startswith("note: empty class folder ") and line.endswith("empty\\ncls left out")
               for line in summary.splitlines())
    assert "\t" not in summary and not any(line.startswith(("line", "cls")) for line in summary.splitlines())
