import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from conftest import copy_of_run
from imgclf.evaluation import evaluate_predictions

CLASSES = ["cat", "dog", "fox", "owl"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4))
    logits[np.arange(200), y_true] += 1.5  # mostly right, with real mistakes
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probabilities


def test_confusion_matrix_equals_scikit_learn(predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    expected = confusion_matrix(y_true, probabilities.argmax(axis=1), labels=range(4))
    np.testing.assert_array_equal(ev.confusion_matrix, expected)
    np.testing.assert_allclose(ev.confusion_matrix_normalized, expected / expected.sum(axis=1, keepdims=True))


def test_error_rate_is_one_minus_accuracy(predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    assert 0 < ev.error_rate < 1
    assert ev.error_rate == pytest.approx(1 - ev.accuracy)
    assert ev.accuracy == pytest.approx(np.trace(ev.confusion_matrix) / len(y_true))


def test_per_class_scores_match_scikit_learn(predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, probabilities.argmax(axis=1))
    assert [row["class"] for row in ev.per_class] == CLASSES
    np.testing.assert_allclose([row["recall"] for row in ev.per_class], recall)
    np.testing.assert_allclose([row["error_rate"] for row in ev.per_class], 1 - recall)
    assert [row["support"] for row in ev.per_class] == list(support)


def test_most_confused_and_misclassified():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    probabilities = np.eye(3)[[1, 1, 0, 1, 2, 2]] * 0.9 + 0.1 / 3
    ev = evaluate_predictions(y_true, probabilities, ["a", "b", "c"], paths=[f"f{i}.png" for i in range(6)], top_k=2)
    assert ev.most_confused() == [("a", "b", 2), ("b", "c", 1)]
    wrong = ev.misclassified()
    assert {row["path"] for row in wrong} == {"f0.png", "f1.png", "f4.png"}
    assert {(row["true"], row["predicted"]) for row in wrong} == {("a", "b"), ("b", "c")}
    assert ev.top_k is not None and ev.top_k[0] == 2


def test_absent_class_does_not_break_rates():
    ev = evaluate_predictions([0, 0, 1], np.eye(3)[[0, 1, 1]], ["a", "b", "c"])
    assert ev.per_class[2]["support"] == 0
    assert not np.isnan(ev.confusion_matrix_normalized).any()


def test_save_writes_named_confusion_matrix(tmp_path, predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    ev.save(tmp_path)
    lines = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert lines[0].split(",")[1:] == CLASSES
    assert [line.split(",")[0] for line in lines[1:]] == CLASSES
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["error_rate"] + metrics["accuracy"] == pytest.approx(1)
    assert metrics["images"] == 200


def _killed_after(writes: int, monkeypatch):
    """Makes the evaluation module's file writes stop the process (as a kill would) once `writes` have been done."""
    import imgclf.evaluation as module

    done = []

    def counted(write):
        def wrapper(path, *args):
            if len(done) == writes:
                raise KeyboardInterrupt
            done.append(Path(path).name)
            return write(path, *args)
        return wrapper

    monkeypatch.setattr(module, "write_csv", counted(module.write_csv))
    monkeypatch.setattr(module, "write_json", counted(module.write_json))
    return done


@pytest.mark.parametrize("writes", range(7))
def test_a_folder_holds_metrics_json_only_with_every_number_of_the_same_evaluation(tmp_path, monkeypatch, writes):
    old = evaluate_predictions([0, 1, 1, 0], np.eye(2)[[0, 1, 0, 1]], ["cat", "dog"], paths=list("abcd"))
    old.save(tmp_path)
    new = evaluate_predictions([0, 1, 1], np.eye(2)[[0, 1, 1]], ["cat", "dog"], paths=list("abc"))
    done = _killed_after(writes, monkeypatch)
    try:
        new.save(tmp_path)
    except KeyboardInterrupt:
        assert not (tmp_path / "metrics.json").exists(), f"metrics.json beside old numbers after writing {done}"
    else:
        assert done[-1] == "metrics.json"
        assert json.loads((tmp_path / "metrics.json").read_text())["images"] == 3
        assert (tmp_path / "misclassified.csv").read_text().count("\n") == 1  # the new evaluation's: no mistakes
        assert (tmp_path / "per_class.csv").read_text().splitlines()[1:] == ["cat,1.0,1.0,1.0,1,0.0",
                                                                              "dog,1.0,1.0,1.0,2,0.0"]


def test_empty_split_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable images"):
        evaluate_predictions([], np.zeros((0, 2)), ["a", "b"])


def test_run_files_are_readable_by_others_under_umask_022(tmp_path):
    import os
    import stat

    import imgclf
    from conftest import make_class_folder

    old = os.umask(0o022)
    try:
        run = imgclf.train(make_class_folder(tmp_path / "data", per_class=6), model="mlp", hidden=(16,), epochs=1,
                           out=tmp_path / "run", verbose=0, progress=False)
        ev = imgclf.evaluate(run, progress=False)
        imgclf.report(run, ev)
    finally:
        os.umask(old)
    written = [p for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {"model.keras", "manifest.csv", "metrics.json", "misclassified.csv", "confusion_matrix.png"} <= {
        p.name for p in written}
    assert {str(p.relative_to(run.path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {
        str(p.relative_to(run.path)): oct(0o644) for p in written}


def test_written_numbers_are_rounded_to_6_significant_digits(tmp_path):
    y_true = np.zeros(1000, dtype=int)
    probabilities = np.tile([0.9, 0.1], (1000, 1))
    probabilities[:43] = [0.2, 0.8]  # 43 mistakes: error rate 1 - 0.957 = 0.04300000000000004 in floats
    ev = evaluate_predictions(y_true, probabilities, ["a", "b"], split="test")
    assert ev.error_rate != 0.043
    ev.save(tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    assert '"error_rate": 0.043,' in text and '"accuracy": 0.957,' in text
    assert "00000" not in text and "99999" not in text
    metrics = json.loads(text)
    assert metrics["per_class_error_rate"] == {"a": 0.043, "b": None}  # no image of b: no error rate
    assert metrics["macro_precision"] == pytest.approx(1.0)  # averaged over the classes the images hold: a
    assert (tmp_path / "per_class.csv").read_text().splitlines()[1] == "a,1.0,0.957,0.978028,1000,0.043"



def test_undefined_per_class_scores_are_empty_and_left_out_of_the_averages(tmp_path):
    # a: right twice, predicted once more; b: never predicted (no precision); c: no image (no recall, F1, error rate)
    ev = evaluate_predictions([0, 0, 1, 1], np.eye(3)[[0, 0, 0, 2]], ["a", "b", "c"])
    ev.save(tmp_path)
    assert (tmp_path / "per_class.csv").read_text().splitlines() == [
        "class,precision,recall,f1,support,error_rate",
        "a,0.666667,1.0,0.8,2,0.0",
        "b,,0.0,0.0,2,1.0",
        "c,0.0,,,0,",
    ]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["macro_precision"] == metrics["weighted_precision"] == 0.666667  # a's alone: b's is undefined
    assert metrics["macro_recall"] == 0.5 and metrics["macro_f1"] == 0.4  # over a and b, the classes the images hold
    assert metrics["per_class_error_rate"] == {"a": 0.0, "b": 1.0, "c": None}


def test_a_precision_average_with_no_predicted_class_is_null_in_metrics_json(tmp_path):
    evaluate_predictions([1, 1], np.eye(2)[[0, 0]], ["a", "b"]).save(tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    assert '"macro_precision": null,' in text and '"weighted_precision": null,' in text and "NaN" not in text
    assert json.loads(text)["macro_f1"] == 0.0

# What `imgclf evaluate` adds: the numbers behind the report ------------------------------------------------------

from sklearn.metrics import balanced_accuracy_score, classification_report, log_loss  # noqa: E402

from imgclf.evaluation import calibration_bins, expected_calibration_error, wilson_interval  # noqa: E402


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), table I: 0/10 → 0–0.2775, 1/10 → 0.0179–0.4042; and 10/100 → 0.0552–0.1744.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(1, 10) == pytest.approx((0.0179, 0.4042), abs=1e-4)
    assert wilson_interval(10, 100) == pytest.approx((0.0552, 0.1744), abs=1e-4)
    assert wilson_interval(100, 100)[1] == 1.0


def test_wilson_interval_is_exactly_0_at_no_errors_and_1_when_all_are_wrong():
    # The formula leaves rounding errors (5.6e-17 for 0 of 3) that a report would print.
    for total in range(1, 300):
        assert wilson_interval(0, total)[0] == 0.0 and wilson_interval(total, total)[1] == 1.0


def test_expected_calibration_error_matches_a_hand_computed_case():
    y_true = np.array([0, 1, 0, 0])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    # Bins of width 0.1: (0.8, 0.9] holds 0.9 (right), (0.7, 0.8] holds 0.8 (wrong), (0.5, 0.6] holds 0.6 and 0.55
    # (both right, mean confidence 0.575). ECE = (1·|1 − 0.9| + 1·|0 − 0.8| + 2·|1 − 0.575|) / 4 = 0.4375.
    assert expected_calibration_error(y_true, probabilities) == pytest.approx(0.4375)
    bins = calibration_bins(y_true, probabilities)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 1, 1, 0]
    assert bins[5]["confidence"] == pytest.approx(0.575) and bins[5]["accuracy"] == 1.0
    assert bins[7]["accuracy"] == 0.0 and bins[0]["accuracy"] is None
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error([0, 1], perfect) == 0.0


def test_metrics_json_adds_scores_from_scikit_learn(tmp_path, predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    ev.save(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    y_pred = probabilities.argmax(axis=1)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), rel=1e-5)
    assert metrics["log_loss"] == pytest.approx(log_loss(y_true, probabilities), rel=1e-5)
    assert metrics["log_loss"] == pytest.approx(float(np.mean(ev.losses)), rel=1e-5)
    assert metrics["expected_calibration_error"] == pytest.approx(expected_calibration_error(y_true, probabilities), rel=1e-5)
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for average in ("macro", "weighted"):
        expected = report[f"{average} avg"]
        assert metrics[f"{average}_precision"] == pytest.approx(expected["precision"], rel=1e-5)
        assert metrics[f"{average}_recall"] == pytest.approx(expected["recall"], rel=1e-5)
        assert metrics[f"{average}_f1"] == pytest.approx(expected["f1-score"], rel=1e-5)
    interval = metrics["error_rate_interval"]
    assert interval["low"] < metrics["error_rate"] < interval["high"]
    assert (interval["low"], interval["high"]) == pytest.approx(wilson_interval(metrics["errors"], 200), rel=1e-5)


def test_normalized_matrix_and_most_confused_files(tmp_path, predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES)
    ev.save(tmp_path)
    rows = list(csv.reader(open(tmp_path / "confusion_matrix_normalized.csv")))
    assert rows[0][1:] == CLASSES
    np.testing.assert_allclose([sum(float(v) for v in row[1:]) for row in rows[1:]], 1.0, atol=1e-5)
    pairs = list(csv.DictReader(open(tmp_path / "most_confused.csv")))
    counts = [int(row["count"]) for row in pairs]
    assert counts == sorted(counts, reverse=True) and sum(counts) == ev.errors
    support = dict(zip(CLASSES, ev.confusion_matrix.sum(axis=1)))
    for row in pairs:
        t, p = CLASSES.index(row["true"]), CLASSES.index(row["predicted"])
        assert int(row["count"]) == ev.confusion_matrix[t, p]
        assert float(row["share"]) == pytest.approx(int(row["count"]) / support[row["true"]], rel=1e-5)


def test_misclassified_csv_holds_loss_and_top_3_sorted_by_loss(tmp_path, predictions):
    y_true, probabilities = predictions
    ev = evaluate_predictions(y_true, probabilities, CLASSES, paths=[f"img/{i}.png" for i in range(200)])
    ev.save(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "misclassified.csv")))
    assert len(rows) == ev.errors
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True)
    for row in rows:
        i = int(row["path"][4:-4])
        assert float(row["loss"]) == pytest.approx(-np.log(probabilities[i, y_true[i]]), abs=1e-4)
        order = np.argsort(-probabilities[i])[:3]
        assert [row[f"top_{k}_class"] for k in (1, 2, 3)] == [CLASSES[j] for j in order]
        assert row["top_1_class"] == row["predicted"] != row["true"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-epoch MLP on three tiny classes, evaluated on its train split (enough images to hold mistakes)."""
    import imgclf
    from conftest import make_class_folder

    root = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        data = make_class_folder(root / "data", per_class=14)
        run = imgclf.train(data, model="mlp", hidden=(16,), epochs=1, batch_size=8, out=root / "run", verbose=0,
                           progress=False)
        evaluation = imgclf.evaluate(run, "train", progress=False)
    return root, run, evaluation


def test_confusion_matrix_rebuilds_from_misclassified_csv_and_the_correct_predictions(tiny_run):
    _, run, ev = tiny_run
    folder = run.path / "eval" / "train"
    classes = json.loads((run.path / "classes.json").read_text())
    truth = {row["path"]: row["label"] for row in csv.DictReader(open(run.path / "manifest.csv"))
             if row["split"] == "train" and row["status"] != "error"}
    predicted = dict(truth)  # every image not listed as a mistake was predicted right
    mistakes = list(csv.DictReader(open(folder / "misclassified.csv")))
    assert mistakes, "a one-epoch MLP on 16x16 noise makes mistakes"
    for row in mistakes:
        assert truth[row["path"]] == row["true"]
        predicted[row["path"]] = row["predicted"]
    paths = sorted(truth)
    expected = confusion_matrix([truth[p] for p in paths], [predicted[p] for p in paths], labels=classes)
    written = np.array([[int(v) for v in row[1:]] for row in list(csv.reader(open(folder / "confusion_matrix.csv")))[1:]])
    np.testing.assert_array_equal(written, expected)

    metrics = json.loads((folder / "metrics.json").read_text())
    off_diagonal = written.sum() - np.trace(written)
    assert metrics["errors"] == off_diagonal == len(mistakes)
    assert metrics["error_rate"] == pytest.approx(1 - metrics["accuracy"])
    assert metrics["error_rate"] == pytest.approx(off_diagonal / written.sum(), rel=1e-5)

    report = classification_report([truth[p] for p in paths], [predicted[p] for p in paths], labels=classes,
                                    output_dict=True, zero_division=0)
    predicted_classes = set(predicted.values())
    for row in csv.DictReader(open(folder / "per_class.csv")):
        expected_row = report[row["class"]]
        if row["class"] not in predicted_classes:  # never predicted: no precision, not 0
            assert row["precision"] == "" and expected_row["precision"] == 0
            continue
        assert float(row["precision"]) == pytest.approx(expected_row["precision"], rel=1e-5)
        assert float(row["recall"]) == pytest.approx(expected_row["recall"], rel=1e-5)
        assert float(row["f1"]) == pytest.approx(expected_row["f1-score"], rel=1e-5)
        assert int(row["support"]) == expected_row["support"]
    assert metrics["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"], rel=1e-5)
    assert metrics["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"], rel=1e-5)


def test_evaluate_on_another_folder_skips_bad_files(tiny_run, tmp_path):
    import imgclf
    from conftest import make_class_folder

    _, run, _ = tiny_run
    other = make_class_folder(tmp_path / "field photos", per_class=4, classes=["circle", "square"], start=100)
    (other / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    ev = imgclf.evaluate(run, data=other, progress=False)
    assert ev.split == "field photos" and len(ev.y_true) == 8
    assert [Path(row["path"]).name for row in ev.skipped] == ["broken.png"]
    folder = run.path / "eval" / "field photos"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["images"] == 8 and metrics["skipped_files"] == 1 and metrics["source"] == str(other)
    assert ev.copies == {} and "copies_of_run_images" not in metrics  # new images: none the run has seen
    assert list(csv.reader(open(folder / "skipped.csv")))[1][0].endswith("broken.png")
    # the classes the folder lacks are still rows of the matrix, with no error rate, and out of the macro averages
    assert ev.confusion_matrix.shape == (3, 3) and ev.confusion_matrix[2].sum() == 0
    absent = next(row for row in ev.per_class if row["class"] == "triangle")
    assert absent["support"] == 0 and absent["error_rate"] is None and metrics["per_class_error_rate"]["triangle"] is None
    present = [row["f1"] for row in ev.per_class if row["support"]]
    assert metrics["macro_f1"] == pytest.approx(sum(present) / len(present), rel=1e-5)
    assert next(r for r in csv.DictReader(open(folder / "per_class.csv")) if r["class"] == "triangle")["error_rate"] == ""


def test_cli_evaluate_on_a_folder_holding_the_runs_own_images_says_how_many_it_trained_on(tiny_run, capsys):
    from imgclf.cli import main

    root, run, _ = tiny_run
    rows = [row for row in csv.DictReader(open(run.path / "manifest.csv")) if row["status"] != "error"]
    trained = sum(row["split"] == "train" for row in rows)
    validated = sum(row["split"] == "val" for row in rows)
    assert trained and validated
    assert main(["evaluate", str(run.path), "--data", str(root / "data")]) == 0
    shown = capsys.readouterr().out
    assert (f"note: {trained + validated} of the {len(rows)} images are copies of images the run trained on or chose "
            f"its best epoch by ({trained} of its train split and {validated} of its val split; e.g. ") in shown
    metrics = json.loads((run.path / "eval" / "data" / "metrics.json").read_text())
    assert metrics["copies_of_run_images"] == {"train": trained, "val": validated}
    page = (run.path / "report.html").read_text()
    assert f"{trained + validated} of these images are copies of images the run trained on" in page


def test_evaluate_on_a_folder_matches_class_names_in_either_unicode_form(tmp_path):
    import shutil
    import unicodedata

    import imgclf
    from conftest import make_class_folder

    data = make_class_folder(tmp_path / "data", per_class=6, classes=["circle", "square"])
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, out=tmp_path / "run", verbose=0, progress=False)
    decomposed = unicodedata.normalize("NFD", "caf\u00e9")  # as a run trained before names were kept in NFC has it
    run.write_classes([decomposed, "square"])
    new = tmp_path / "new"
    shutil.copytree(data / "circle", new / "caf\u00e9")  # typed on Linux: NFC
    shutil.copytree(data / "square", new / "square")
    evaluation = imgclf.evaluate(run, data=new, progress=False)
    assert evaluation.classes == [decomposed, "square"] and len(evaluation.y_true) == 12


def test_evaluate_on_a_folder_with_an_unknown_class_names_it(tiny_run, tmp_path):
    import imgclf
    from conftest import make_class_folder
    from imgclf.manifest import DatasetError

    _, run, _ = tiny_run
    other = make_class_folder(tmp_path / "other", per_class=3, classes=["circle"])
    make_class_folder(tmp_path / "other", per_class=3, classes=["square"])
    (tmp_path / "other" / "hexagon").mkdir()
    for i in range(3):
        (tmp_path / "other" / "circle" / f"circle_{i:03d}.png").rename(tmp_path / "other" / "hexagon" / f"h{i}.png")
    make_class_folder(tmp_path / "other", per_class=3, classes=["circle"], start=50)
    (tmp_path / "other" / "Square").mkdir()
    (tmp_path / "other" / "square" / "square_000.png").rename(tmp_path / "other" / "Square" / "s.png")
    with pytest.raises(DatasetError) as raised:
        imgclf.evaluate(run, data=other, progress=False)
    assert str(raised.value).startswith(
        f"{other} has classes the model was not trained on: 'Square' (the model has 'square'), 'hexagon'. The model "
        f"knows {', '.join(repr(name) for name in run.classes())}; evaluate on a folder whose subfolders are among them "
        "(class names are case-sensitive).")


def test_a_folder_whose_every_file_has_an_error_says_which_errors(tiny_run, tmp_path):
    import shutil

    import imgclf
    from conftest import make_class_folder
    from imgclf.manifest import DatasetError

    _, run, _ = tiny_run
    other = make_class_folder(tmp_path / "other", per_class=2, classes=["circle"])
    shutil.copytree(other / "circle", other / "square")  # the same pictures under both classes
    (other / "square" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError) as raised:
        imgclf.evaluate(run, data=other, progress=False)
    assert str(raised.value) == (f"{other} has no usable images to evaluate: its 5 file(s) all have errors "
                                 f"(label_conflict 4, empty_file 1). `imgclf audit {other}` lists them.")


def test_a_folder_named_like_a_split_or_like_another_folder_never_replaces_their_results(tiny_run, tmp_path):
    import imgclf
    from conftest import make_class_folder

    _, run, _ = tiny_run
    train_metrics = (run.eval_dir("train") / "metrics.json").read_text()
    first = make_class_folder(tmp_path / "2023" / "train", per_class=2, classes=["circle", "square"], start=100)
    second = make_class_folder(tmp_path / "2024" / "train", per_class=3, classes=["circle", "square"], start=200)
    assert imgclf.evaluate(run, data=first, progress=False).split == "2023-train"
    assert imgclf.evaluate(run, data=second, progress=False).split == "2024-train"
    again = imgclf.evaluate(run, data=first, progress=False)  # the same folder replaces its own results
    assert again.split == "2023-train"
    clash = make_class_folder(tmp_path / "other" / "2023-train", per_class=1, classes=["circle"], start=300)
    named = imgclf.evaluate(run, data=clash, progress=False).split
    assert named.startswith("2023-train-") and len(named) == len("2023-train-") + 8
    assert (run.eval_dir("train") / "metrics.json").read_text() == train_metrics
    sources = {p.parent.name: json.loads(p.read_text()).get("source") for p in (run.path / "eval").glob("*/metrics.json")}
    assert sources["2023-train"] == str(first) and sources["2024-train"] == str(second) and sources[named] == str(clash)


def test_an_empty_split_is_named_with_the_splits_that_hold_images(tmp_path):
    import imgclf
    from conftest import make_class_folder

    data = make_class_folder(tmp_path / "data", per_class=6)
    run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, test=0.0, out=tmp_path / "run", verbose=0,
                       progress=False)
    with pytest.raises(ValueError, match=r"The test split of .* holds no images.*--split val or --split train"):
        imgclf.evaluate(run, progress=False)


@pytest.mark.parametrize("text, message", [
    ('["circle", "square", "triangle", "star"]', "{model} predicts 3 classes but {classes} names 4. The run directory "
                                                 "is inconsistent; train it again."),
    ('["circle", "square"]', "{model} predicts 3 classes but {classes} names 2. The run directory is inconsistent; "
                             "train it again."),
    ('["x", "y", "z"]', "{manifest} lists images of ['circle', 'square', 'triangle'], which {classes} does not name "
                        "(it names ['x', 'y', 'z']). The run directory is inconsistent; train it again."),
    ('["circle", "square",', "{classes} is not valid JSON (Expecting value: line 1 column 21 (char 20)); it should hold "
                             "the run's class names, e.g. [\"cat\", \"dog\"]. Restore it from a copy of the run, or "
                             "train the run again."),
], ids=["more", "fewer", "renamed", "not_json"])
def test_cli_evaluate_refuses_a_classes_json_that_does_not_fit_the_model(tiny_run, tmp_path, capsys, text, message):
    from imgclf.cli import main

    _, run, _ = tiny_run
    copy = copy_of_run(run, tmp_path / "run")
    copy.classes_path.write_text(text)
    assert main(["evaluate", str(copy.path), "--no-report"]) == 1
    expected = message.format(model=copy.model_path, classes=copy.classes_path, manifest=copy.manifest_path)
    assert capsys.readouterr().err == f"imgclf evaluate: error: {expected}\n"
    assert not (copy.path / "eval").exists()


def test_cli_evaluate_names_a_damaged_model_keras(tiny_run, tmp_path, capsys):
    from imgclf.cli import main

    _, run, _ = tiny_run
    copy = copy_of_run(run, tmp_path / "run")
    copy.model_path.write_bytes(run.model_path.read_bytes()[:3000])
    assert main(["evaluate", str(copy.path), "--no-report"]) == 1
    assert capsys.readouterr().err == (
        f"imgclf evaluate: error: {copy.model_path} is damaged: it is not a valid .keras file (3,000 bytes that are not "
        "a zip archive: cut short?). Train the run again, or copy model.keras again from where the run was trained.\n")


def _move_images(run, old, new, *, only=None):
    """Rewrites the paths of `manifest.csv` as if the files under `old` were now under `new` (all, or `only`)."""
    from imgclf.manifest import Manifest

    manifest = Manifest.read_csv(run.manifest_path)
    for entry in manifest.entries:
        if only is None or entry.path == only:
            entry.path = str(new / Path(entry.path).relative_to(old))
    manifest.to_csv(run.manifest_path)
    return manifest


def test_cli_evaluate_after_the_data_folder_moved_says_so_with_a_cold_cache(tiny_run, tmp_path, capsys):
    from imgclf.cli import main

    root, run, _ = tiny_run
    copy = copy_of_run(run, tmp_path / "run")
    manifest = _move_images(copy, root / "data", tmp_path / "moved")  # the cache of this test is empty
    test = manifest.split("test")
    assert main(["evaluate", str(copy.path), "--no-report"]) == 1
    assert capsys.readouterr().err == (
        f"imgclf evaluate: error: None of the {len(test)} test images listed in {copy.manifest_path} exist "
        f"(e.g. {test[0].path}): the data folder may have moved, or been deleted, since the run was trained. Put the "
        f"folder back where it was, or evaluate the images where they are now with `imgclf evaluate {copy.path} "
        "--data NEWFOLDER` (every image in it, not one split).\n")


def test_evaluate_with_some_images_gone_lists_them_in_skipped_csv(tiny_run, tmp_path):
    import imgclf

    root, run, _ = tiny_run
    from imgclf.manifest import Manifest

    copy = copy_of_run(run, tmp_path / "run")
    first = Manifest.read_csv(copy.manifest_path).split("test")[0].path
    _move_images(copy, root / "data", tmp_path / "moved", only=first)
    ev = imgclf.evaluate(copy, progress=False)
    gone = str(tmp_path / "moved" / Path(first).relative_to(root / "data"))
    assert [row["path"] for row in ev.skipped] == [gone] and ev.skipped[0]["problem"] == "unreadable"
    assert list(csv.reader(open(copy.eval_dir("test") / "skipped.csv")))[1][0] == gone


def test_evaluate_when_every_image_of_the_split_is_broken_names_one(tiny_run, tmp_path):
    import shutil

    import imgclf

    root, run, _ = tiny_run
    copy = copy_of_run(run, tmp_path / "run")
    shutil.copytree(root / "data", tmp_path / "copied")
    manifest = _move_images(copy, root / "data", tmp_path / "copied")
    test = manifest.split("test")
    for entry in test:
        Path(entry.path).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    with pytest.raises(ValueError) as raised:
        imgclf.evaluate(copy, progress=False)
    message = str(raised.value)
    assert message.startswith(f"None of the {len(test)} images of the test split of {copy.manifest_path} could be read "
                              f"(e.g. {test[0].path}: ")
    assert message.endswith("): there is nothing to evaluate.")


def test_a_test_image_rewritten_since_training_is_evaluated_as_it_is_now_whatever_the_cache(tmp_path, monkeypatch):
    import os
    import time

    import imgclf
    from conftest import CLASS_STYLES, draw_example, make_class_folder

    data = make_class_folder(tmp_path / "data", per_class=10)
    run = imgclf.train(data, model="mlp", hidden=(16,), epochs=3, batch_size=8, out=tmp_path / "run", verbose=0,
                       progress=False)
    before = imgclf.evaluate(run, progress=False)
    rewritten = next(e.path for e in run.manifest().split("test") if e.label == "circle")
    draw_example(CLASS_STYLES["square"], 99).save(rewritten)  # now a square, still labelled circle
    later = time.time() + 5
    os.utime(rewritten, (later, later))
    warm = imgclf.evaluate(run, progress=False)  # the training cache holds the old pixels under the old hash
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold"))
    cold = imgclf.evaluate(run, progress=False)
    assert warm.changed == cold.changed == [rewritten] and before.changed == []
    assert warm.probabilities.tolist() == cold.probabilities.tolist()
    assert warm.probabilities.tolist() != before.probabilities.tolist()


def test_the_split_evaluated_by_default_is_the_runs_eval_split(tmp_path):
    import imgclf
    from conftest import make_class_folder

    data = make_class_folder(tmp_path / "data", per_class=8)
    config = {"eval": {"split": "val"}, "train": {"epochs": 1}}
    run = imgclf.train(data, config=config, model="mlp", hidden=(8,), out=tmp_path / "run", verbose=0, progress=False)
    assert imgclf.evaluate(run, progress=False).split == "val"
    assert imgclf.evaluate(run, "test", progress=False).split == "test"
