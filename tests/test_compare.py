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


def test_compare_notes_runs_of_other_classes_other_splits_and_a_run_given_twice(runs, tmp_path):
    import imgclf

    three, two = runs
    comparison = imgclf.compare([three, two, three.path], out=tmp_path / "cmp", html=True)
    assert comparison.runs == [str(three.path), str(two.path), str(three.path)]
    table = {name: values for _, name, values in comparison.rows}
    assert table["classes"] == ["3: circle, square, triangle", "2: circle, square", "3: circle, square, triangle"]
    assert table["evaluated on"] == ["test (3 images)", "val (2 images)", "test (3 images)"]
    notes = [
        f"{three.path} is given 2 times: its columns are the same run.",
        "The runs were trained on different classes (triangle not in every run; row classes): their error rates are "
        "not measured on the same task.",
        f"The error rates come from different evaluations (row evaluated on: test for {three.path}, {three.path}; val "
        f"for {two.path}): evaluate the runs on the same split or folder, e.g. `imgclf evaluate RUN --split test`, to "
        "compare them.",
    ]
    assert comparison.notes == notes
    markdown = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "| **classes** ≠ | **3: circle, square, triangle** | **2: circle, square** |" in markdown
    assert markdown.endswith("".join(f"\nNote: {note}\n" for note in notes).replace("_", "\\_"))
    page = (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")
    assert page.count('<p class="note">Note: ') == 3 and "triangle not in every run" in page


def test_runs_of_the_same_classes_evaluated_on_the_same_split_get_no_note(runs, tmp_path):
    import imgclf

    three, _ = runs
    comparison = imgclf.compare([three, _copy(three, tmp_path / "again")])
    assert comparison.notes == [] and "Note:" not in comparison.markdown()
    table = {name: values for _, name, values in comparison.rows}
    assert table["classes"] == ["3: circle, square, triangle"] * 2


def test_the_classes_of_many_runs_are_told_apart_by_a_hash_where_their_names_would_not_fit(runs, tmp_path):
    import imgclf

    three, _ = runs
    copies = [copy_of_run(three, tmp_path / name) for name in ("long", "longer")]
    copies[0].write_classes([f"a_rather_long_class_name_{i}" for i in range(3)])
    copies[1].write_classes([f"a_rather_long_class_name_{i}" for i in (0, 1, 3)])
    comparison = imgclf.compare(copies)
    [values] = [values for _, name, values in comparison.rows if name == "classes"]
    assert [value[:8] for value in values] == ["3: sha1 "] * 2 and values[0] != values[1]
    assert comparison.notes[0].startswith("The runs were trained on different classes (a_rather_long_class_name_2, "
                                          "a_rather_long_class_name_3 not in every run; row classes)")


def test_compare_says_that_a_runs_training_stopped_and_how_to_continue_it(runs, tmp_path, capsys):
    from imgclf.cli import main

    three, _ = runs
    killed = copy_of_run(three, tmp_path / "killed")  # stopped while model.keras was written
    killed.model_path.unlink()
    assert main(["compare", str(three.path), str(killed.path), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| **evaluated on** ≠ | **test (3 images)** | **not evaluated: its training stopped** |" in out
    assert (f"\nNote: killed has no model.keras yet: its training stopped after epoch 1 of 1. Continue it with "
            f"`imgclf train DATA --out {killed.path} --resume`, DATA being the folder it was trained on.\n") in out
