"""imgclf compare: what it tells about runs that cannot be compared, run names in Markdown, damaged metrics.json."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import copy_of_run, make_class_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-epoch MLPs: `three` (3 classes, evaluated on test) and `two` (2 of those classes, evaluated on val)."""
    import imgclf

    root = tmp_path_factory.mktemp("compared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        three = imgclf.train(make_class_folder(root / "data3", per_class=6), model="mlp", hidden=(8,), epochs=1,
                             out=root / "three", verbose=0, progress=False)
        imgclf.evaluate(three, "test", progress=False)
        two = imgclf.train(make_class_folder(root / "data2", per_class=6, classes=["circle", "square"]), model="mlp",
                           hidden=(8,), epochs=1, out=root / "two", verbose=0, progress=False)
        imgclf.evaluate(two, "val", progress=False)
    return three, two


def _copy(run, folder):
    """A copy of a run with its evaluations."""
    shutil.copytree(run.path, folder, ignore=shutil.ignore_patterns(".lock"))
    return folder


@pytest.mark.parametrize("metrics, named", [
    ({}, "images, classes, accuracy, error_rate, errors, macro_f1"),
    ("edit", "error_rate"),
    ([], "images, classes, accuracy, error_rate, errors, macro_f1"),
], ids=["empty", "one_key_gone", "not_an_object"])
def test_compare_names_a_metrics_json_without_a_number_and_the_command_that_writes_it(runs, tmp_path, capsys,
                                                                                       metrics, named):
    from imgclf.cli import main

    three, _ = runs
    copy = _copy(three, tmp_path / "run")
    path = copy / "eval" / "test" / "metrics.json"
    if metrics == "edit":
        metrics = json.loads(path.read_text())
        del metrics["error_rate"]
    path.write_text(json.dumps(metrics))
    assert main(["compare", str(copy), str(three.path), "--out", str(tmp_path / "cmp")]) == 1
    assert capsys.readouterr().err == (
        f"imgclf compare: error: {path} has no number for {named}: it was edited by hand or written by another "
        f"version of imgclf. Evaluate again with `imgclf evaluate {copy} --split test`.\n")


def test_a_damaged_metrics_json_of_a_data_folder_names_the_folder_to_evaluate_again(runs, tmp_path):
    import imgclf

    three, _ = runs
    photos = make_class_folder(tmp_path / "photos", per_class=2, classes=["circle"], start=50)
    copy = copy_of_run(three, tmp_path / "run")
    imgclf.evaluate(copy, data=photos, progress=False)
    path = copy.eval_dir("photos") / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "macro_f1": "n/a"}))
    with pytest.raises(ValueError) as raised:
        imgclf.compare([copy])
    assert str(raised.value) == (
        f"{path} has no number for macro_f1: it was edited by hand or written by another version of imgclf. "
        f"Evaluate again with `imgclf evaluate {copy.path} --data {photos}`.")


def test_run_names_show_as_text_in_comparison_md_whatever_markdown_they_hold(runs, tmp_path):
    import html

    import imgclf

    markdown_it = pytest.importorskip("markdown_it")
    three, _ = runs
    names = ["a|b<img src=x onerror=alert(1)>", "_x_ *y* `z` ~~s~~ [l](javascript:alert(1)) &amp; \\*", "small_cnn"]
    for name in names:
        _copy(three, tmp_path / name)
    imgclf.compare([tmp_path / name for name in names], out=tmp_path / "cmp")
    text = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == ("| | a\\|b&lt;img src=x onerror=alert(1)&gt; | \\_x\\_ \\*y\\* \\`z\\` \\~\\~s\\~\\~ "
                                    "[l]\\(javascript:alert(1)) &amp;amp; \\\\\\\\\\* | small_cnn |")
    # As a Markdown viewer that passes HTML through shows it: the names as text, no element made of them.
    page = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)
    head = page[page.index("<thead>"):page.index("</thead>")]
    assert head.count("<th>") == 4
    assert [tag for tag in ("<img", "<em>", "<strong>", "<code>", "<s>", "<a ") if tag in head] == []
    shown = [html.unescape(cell[:cell.index("</th>")]) for cell in head.split("<th>")[2:]]
    assert shown == [names[0], names[1].replace("\\", "\\\\"), "small_cnn"]  # run names are shown escaped
