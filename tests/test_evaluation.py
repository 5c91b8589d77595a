import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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
    assert metrics["per_class_error_rate"] == {"a": 0.043, "b": 0.0}
    assert metrics["macro_precision"] == pytest.approx(np.mean([1.0, 0.0]))
    assert (tmp_path / "per_class.csv").read_text().splitlines()[1] == "a,1.0,0.957,0.978028,1000,0.043"
