"""File and class names that are not valid UTF-8 (Linux names are bytes) are used like any other."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

import imgclf
from conftest import CLASS_STYLES, draw_example, make_class_folder
from imgclf.files import escape_name, unescape_name
from imgclf.manifest import Manifest

LATIN1_CLASS = b"V\xf6gel"  # "Vögel" in Latin-1
LATIN1_FILE = b"caf\xe9.png"  # "café.png" in Latin-1
BACKSLASH_FILE = b"caf\\xe9.png"  # a real backslash: a different file that must not be confused with it


@pytest.fixture
def latin1_folder(tmp_path):
    """Classes circle and square, one Latin-1 file in circle, and a class folder with a Latin-1 name."""
    root = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    circle = os.fsencode(root / "circle")
    draw_example(CLASS_STYLES["circle"], 40).save(os.fsdecode(os.path.join(circle, LATIN1_FILE)))
    draw_example(CLASS_STYLES["circle"], 41).save(os.fsdecode(os.path.join(circle, BACKSLASH_FILE)))
    birds = os.path.join(os.fsencode(root), LATIN1_CLASS)
    os.mkdir(birds)
    for i in range(6):
        draw_example(CLASS_STYLES["triangle"], i).save(os.fsdecode(os.path.join(birds, b"%d.png" % i)))
    return root


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", [LATIN1_FILE, BACKSLASH_FILE, b"a\\b\\\\c\xff\xfe.png", "café €.png".encode(), b"plain.png",
                                  b"cr\rhere.png", b"a\\x0d\r.png", b"new\nline.png"])
def test_escaped_names_read_back_as_the_same_bytes(name):
    text = escape_name(os.fsdecode(name))
    text.encode("utf-8")  # plain text: no surrogates
    assert os.fsencode(unescape_name(text)) == name


def test_escaping_is_readable():
    assert escape_name(os.fsdecode(b"photos/caf\xe9.png")) == "photos/caf\\xe9.png"
    assert escape_name(os.fsdecode(b"photos/caf\\xe9.png")) == "photos/caf\\\\xe9.png"
    assert escape_name("photos/café.png") == "photos/café.png"
    assert escape_name("photos/cr\rhere.png") == "photos/cr\\x0dhere.png"


def test_a_carriage_return_in_a_file_name_survives_the_manifest(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=4, classes=["circle", "square"])
    draw_example(CLASS_STYLES["square"], 40).save(root / "square" / "cr\rhere.png")
    scanned = imgclf.scan(root, progress=False)
    scanned.to_csv(tmp_path / "manifest.csv")
    again = Manifest.read_csv(tmp_path / "manifest.csv")
    assert again.entries == scanned.entries and len(again.usable) == 9
    assert str(root / "square" / "cr\rhere.png") in {e.path for e in again.entries}


def test_latin1_file_and_class_names_audit_train_and_evaluate(latin1_folder, tmp_path):
    result = imgclf.audit(latin1_folder, out=tmp_path / "audit", progress=False)
    assert not result.errors
    assert result.manifest.classes == ["V\\xf6gel", "circle", "square"]
    summary = result.summary()
    assert "20 files: 20 ok" in summary and "largest 'circle' 8, smallest 'V\\xf6gel' 6" in summary

    rows = {row["path"]: row for row in read_rows(tmp_path / "audit" / "audit.csv")}
    latin1, backslash = str(latin1_folder / "circle" / "caf\\xe9.png"), str(latin1_folder / "circle" / "caf\\\\xe9.png")
    assert rows[latin1]["status"] == rows[backslash]["status"] == "ok"
    assert os.fsencode(unescape_name(latin1)) == os.path.join(os.fsencode(latin1_folder / "circle"), LATIN1_FILE)
    assert os.fsencode(unescape_name(backslash)) == os.path.join(os.fsencode(latin1_folder / "circle"), BACKSLASH_FILE)
    assert sum(row["label"] == "V\\xf6gel" for row in rows.values()) == 6

    again = Manifest.read_csv(tmp_path / "audit" / "manifest.csv")
    assert again.entries == result.manifest.entries and all(os.path.isfile(e.path) for e in again.entries)

    run = imgclf.train(latin1_folder, model="mlp", hidden=(16,), epochs=1, out=tmp_path / "run", verbose=0,
                       progress=False)
    assert json.loads((run.path / "classes.json").read_text(encoding="utf-8")) == ["V\\xf6gel", "circle", "square"]
    trained = {e.path for e in run.manifest().usable}
    assert os.fsdecode(os.path.join(os.fsencode(latin1_folder / "circle"), LATIN1_FILE)) in trained
    ev = imgclf.evaluate(run, split="train", progress=False)
    assert len(ev.y_true) == len(run.manifest().split("train"))
    for row in read_rows(run.eval_dir("train") / "misclassified.csv"):
        assert os.path.isfile(unescape_name(row["path"]))
    imgclf.report(run, ev)
    assert "V\\xf6gel" in (run.eval_dir("train") / "confusion_matrix.csv").read_text(encoding="utf-8")


def test_cli_audit_prints_latin1_names_readably(latin1_folder, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONIOENCODING": "utf-8"}
    command = [sys.executable, "-m", "imgclf", "audit", str(latin1_folder), "--out", str(tmp_path / "audit")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "20 files: 20 ok" in done.stdout and "V\\xf6gel" in done.stdout


def test_csv_paths_are_unescaped(latin1_folder, tmp_path):
    lines = ["path,label"] + [f"{escape_name(e.path)},{e.label}" for e in imgclf.scan(latin1_folder, progress=False).entries]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    m = imgclf.scan(tmp_path / "labels.csv", progress=False)
    assert len(m.usable) == 20 and all(os.path.isfile(e.path) for e in m.entries)


ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_csv_paths_read_back_under_a_file_system_encoding_that_is_not_utf8(tmp_path):
    """Under LC_ALL=C (ASCII) or a Latin-1 locale, the manifest's UTF-8 paths still name the files that were scanned."""
    root = make_class_folder(tmp_path / "data", per_class=3, classes=["circle", "square"])
    cafe = os.path.join(os.fsencode(root), "café".encode())
    os.mkdir(cafe)
    for i in range(3):
        draw_example(CLASS_STYLES["triangle"], i).save(os.fsdecode(os.path.join(cafe, "é%d.png".encode() % i)))
    script = (
        "import os, sys, imgclf\n"
        "from imgclf.files import escape_name, unescape_name\n"
        "from imgclf.manifest import Manifest\n"
        "assert sys.getfilesystemencoding() == 'ascii', sys.getfilesystemencoding()\n"
        "for name in [b'caf\\xc3\\xa9.png', b'caf\\xe9.png', b'a\\\\x0d\\r.png']:\n"
        "    assert os.fsencode(unescape_name(escape_name(os.fsdecode(name)))) == name, name\n"
        "scanned = imgclf.scan(sys.argv[1], progress=False)\n"
        "scanned.to_csv(sys.argv[2])\n"
        "again = Manifest.read_csv(sys.argv[2])\n"
        "assert again.entries == scanned.entries\n"
        "assert all(os.path.isfile(e.path) for e in again.entries)\n"
        "print(sorted(scanned.classes), len(again.usable))\n"
    )
    env = {**os.environ, **ASCII_LOCALE, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "manifest.csv")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['café', 'circle', 'square'] 9"
    assert "café/é0.png" in (tmp_path / "manifest.csv").read_text(encoding="utf-8")


def test_cli_prints_names_its_output_encoding_lacks_as_escapes(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=3, classes=["circle", "square"])
    (root / "circle").rename(root / "café")
    (root / "square").rename(root / "日本")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "imgclf", "scan", str(root)], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    stdout = done.stdout.decode("ascii")
    assert "caf\\u00e9" in stdout and "\\u65e5\\u672c" in stdout and "2 classes, 6 usable images" in stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="pastes the words into bash")
@pytest.mark.parametrize("name", [b"runs/digits", b"runs/my run", b"runs/sw\\b", b"caf\xe9", "café €".encode(),
                                  b"a\nb", b"it's", b"x\\y\rz", b"~/runs", b"$HOME/*"])
def test_a_printed_command_names_the_folder_when_pasted_into_a_shell(name):
    from imgclf.files import shell_word

    pasted = subprocess.run(["bash", "-c", f"printf %s {shell_word(os.fsdecode(name))}"], capture_output=True)
    assert pasted.stdout == name
