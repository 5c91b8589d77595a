"""report.html: self-contained, escaped, and working in a real browser; confusion matrices that stay readable."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASS_STYLES, REPO, copy_of_run, make_class_folder

HOSTILE = "<img src=x onerror=alert(1)>"
# Screenshots of the page, kept after the run (build/ is ignored by git).
ARTIFACTS = Path(os.environ.get("IMGCLF_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory):
    """A one-epoch small CNN on three classes, one of them named like an HTML tag, evaluated and reported."""
    import imgclf

    root = tmp_path_factory.mktemp("reported")
    styles = {"circle": CLASS_STYLES["circle"], "square": CLASS_STYLES["square"], HOSTILE: CLASS_STYLES["triangle"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        patch.setitem(CLASS_STYLES, HOSTILE, styles[HOSTILE])
        data = make_class_folder(root / "data", per_class=10, classes=list(styles))
        (data / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # left out, listed
        run = imgclf.train(data, model="small_cnn", epochs=1, batch_size=8, out=root / "run", verbose=0, progress=False)
        evaluation = imgclf.evaluate(run, "train", progress=False)  # the train split: enough images for mistakes
        written = imgclf.report(run, evaluation)
    return run, evaluation, written


def test_report_is_one_self_contained_file(reported_run):
    run, evaluation, written = reported_run
    assert written[-1] == run.path / "report.html"
    folder = run.path / "eval" / "train"
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "calibration.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (folder / "gallery.png").exists() == bool(evaluation.errors)
    page = (run.path / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must load nothing from elsewhere"
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the content security policy forbids every request
    for text in ("Dataset", "Training", "Confusion matrices", "Per class", "Most confused pairs", "Calibration",
                 "95% interval", "broken.png", "Resolved config"):
        assert text in page, text
    assert "<td>weights</td><td>none: trained from scratch</td>" in page  # in words, not environment.json's dict


def test_hostile_class_name_is_escaped_everywhere(reported_run):
    run, _, _ = reported_run
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "onerror=alert(1)>" not in page
    # the CSV files keep the name as it is: they are data, not markup
    assert HOSTILE in (run.path / "eval" / "train" / "per_class.csv").read_text(encoding="utf-8")


def test_report_command_rewrites_the_page_without_tensorflow(reported_run, tmp_path):
    import sys

    run, _, _ = reported_run
    out = tmp_path / "copy.html"
    code = ("import sys, imgclf.cli as c; status = c.main(['report', sys.argv[1], '--out', sys.argv[2]]); "
            "assert 'tensorflow' not in sys.modules, 'report imported TensorFlow'; sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, str(run.path), str(out)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report written to" in result.stdout
    assert out.read_text(encoding="utf-8") == (run.path / "report.html").read_text(encoding="utf-8")


# A real browser ------------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _install_chromium() -> str | None:
    """Installs Debian's chromium and chromium-driver when missing; returns why it cannot, or None."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed; install it with: sudo apt-get install -y chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return f"apt-get could not install chromium: {result.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _requests(driver) -> list[str]:
    """URLs the page asked for, from Chromium's network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_renders_sorts_and_stays_offline_in_chromium(reported_run, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    run, evaluation, _ = reported_run
    browser.get_log("performance")  # drop what came before
    browser.get((run.path / "report.html").as_uri())

    assert browser.title.startswith("imgclf report")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # the hostile class name ran nothing
    assert browser.execute_script("return document.querySelectorAll('img[src=x], [onerror]').length") == 0

    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 4
    for image in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0

    table = browser.find_element(By.CSS_SELECTOR, "table.sortable[id^=per-class]")
    rows = lambda: [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]  # noqa: E731
                    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert {row[0] for row in rows()} == {"circle", "square", HOSTILE}  # the name renders as text
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    support = [h.text for h in headers].index("support")
    recall = [h.text for h in headers].index("recall")
    headers[recall].click()
    ascending = [float(row[recall]) for row in rows()]
    assert ascending == sorted(ascending) and headers[recall].get_attribute("aria-sort") == "ascending"
    headers[recall].click()
    descending = [float(row[recall]) for row in rows()]
    assert descending == sorted(descending, reverse=True) and headers[recall].get_attribute("aria-sort") == "descending"
    headers[0].click()
    names = [row[0] for row in rows()]
    headers[0].click()
    assert [row[0] for row in rows()] == names[::-1]
    headers[support].click()
    assert [int(row[support]) for row in rows()] == sorted(int(row[support]) for row in rows())

    page_url = (run.path / "report.html").as_uri()
    leaving = [url for url in _requests(browser) if url != page_url and not url.startswith("data:")]
    assert leaving == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000

    # In a phone-sized window the page itself never scrolls sideways: a wide table scrolls in its own box.
    browser.set_window_size(400, 900)
    try:
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        boxes = browser.execute_script("return Array.from(document.querySelectorAll('table'), t => "
                                       "getComputedStyle(t.parentElement).overflowX)")
        assert boxes and set(boxes) == {"auto"}
    finally:
        browser.set_window_size(1280, 1600)


# Confusion matrices from 2 to 200 classes -------------------------------------------------------------------------

def _evaluation_of(num_classes: int, name_length: int = 12):
    from imgclf.evaluation import evaluate_predictions

    rng = np.random.default_rng(0)
    classes = [f"class_{i:03d}_" + "x" * (name_length - 10) for i in range(num_classes)]
    y_true = np.repeat(np.arange(num_classes), 3)
    probabilities = rng.random((len(y_true), num_classes))
    probabilities[np.arange(len(y_true)), y_true] += 0.8
    return evaluate_predictions(y_true, probabilities / probabilities.sum(1, keepdims=True), classes)


def _overlaps(boxes, axis: str) -> int:
    """Neighbouring tick labels whose extents overlap along `axis` ("x" or "y")."""
    spans = sorted((b.x0, b.x1) if axis == "x" else (b.y0, b.y1) for b in boxes)
    return sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)


@pytest.mark.parametrize("num_classes", [2, 10, 45, 150, 200])
def test_confusion_matrix_labels_never_overlap(num_classes):
    import matplotlib.pyplot as plt

    from imgclf.reporting import confusion_matrix_figure, confusion_matrix_layout

    evaluation = _evaluation_of(num_classes)
    figure = confusion_matrix_figure(evaluation, normalized=num_classes == 150)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        axes = figure.axes[0]
        points, side = confusion_matrix_layout(num_classes)
        x_labels = [t for t in axes.get_xticklabels() if t.get_text()]
        y_labels = [t for t in axes.get_yticklabels() if t.get_text()]
        assert len(x_labels) == len(y_labels) == num_classes  # every class is named on both axes
        assert all(t.get_fontsize() == points >= 6 for t in x_labels + y_labels)
        # each class gets at least 1.2 times its label's height
        spacing = axes.get_window_extent(renderer).height / num_classes  # in pixels
        assert spacing >= 1.2 * points * figure.dpi / 72
        assert _overlaps([t.get_window_extent(renderer) for t in x_labels], "x") == 0
        assert _overlaps([t.get_window_extent(renderer) for t in y_labels], "y") == 0
        assert figure.get_size_inches()[0] >= side
    finally:
        plt.close(figure)


def test_a_long_class_name_is_cut_on_the_confusion_matrix_axes():
    import matplotlib.pyplot as plt

    from imgclf.reporting import confusion_matrix_figure

    figure = confusion_matrix_figure(_evaluation_of(3, name_length=200))
    try:
        labels = [t.get_text() for t in figure.axes[0].get_yticklabels() if t.get_text()]
        # 32 characters, the middle cut: the matrix keeps its room; isolated (U+2068 ... U+2069) from the text around
        assert labels[0] == "\u2068class_000_xxxxx…" + "x" * 16 + "\u2069"
    finally:
        plt.close(figure)


def test_confusion_matrix_png_of_150_classes(tmp_path):
    from PIL import Image

    from imgclf.reporting import plot_confusion_matrix

    path = plot_confusion_matrix(_evaluation_of(150), tmp_path / "cm.png")
    with Image.open(path) as image:
        assert min(image.size) >= 150 * 12  # pixels per class at 100 dpi: 6-point labels at 1.5 line spacing


# Runs side by side ------------------------------------------------------------------------------------------------

def test_compare_puts_runs_side_by_side_and_marks_differences(reported_run, tmp_path):
    import csv
    import sys

    import imgclf

    run, _, _ = reported_run
    other = tmp_path / "mlp-run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        data = make_class_folder(tmp_path / "data", per_class=8)
        imgclf.train(data, model="mlp", hidden=(16,), epochs=1, batch_size=8, out=other, verbose=0, progress=False)
    # The second run is not evaluated: its results are marked as missing, not invented.
    comparison = imgclf.compare([run.path, other], out=tmp_path / "cmp", html=True)
    table = {name: values for _, name, values in comparison.rows}
    assert table["model"] == ["small_cnn", "mlp [16]"]
    assert table["augmentation"] == ["standard", "standard"]  # "auto" for colour images
    assert table["epochs"] == ["1", "1"] and table["schedule"][0] == "train 1 ep @ 0.001"
    assert table["precision"] == ["float32", "float32"]
    assert table["error rate"][0].endswith("%") and table["error rate"][1] == ""
    assert "–" in table["error rate, 95% interval"][0]
    assert table["evaluated on"][1].startswith("not evaluated")
    markdown = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "| **model** ≠ | **small_cnn** | **mlp [16]** |" in markdown
    assert "| augmentation | standard | standard |" in markdown and "| epochs | 1 | 1 |" in markdown
    rows = {row["setting"]: row for row in csv.DictReader(open(tmp_path / "cmp" / "comparison.csv", encoding="utf-8"))}
    assert rows["model"]["differs"] == "yes" and rows["augmentation"]["differs"] == "no"
    assert rows["model"]["run"] == "small_cnn" and rows["model"]["mlp-run"] == "mlp [16]"
    page = (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")
    assert '<tr class="differs"><th>model</th>' in page and "<script" not in page
    for single in (str(other), other):  # one run given as a path, not a list of one
        assert [values for _, name, values in imgclf.compare(single).rows if name == "model"] == [["mlp [16]"]]

    code = "import sys, imgclf.cli as c; s = c.main(sys.argv[1:]); assert 'tensorflow' not in sys.modules; sys.exit(s)"
    result = subprocess.run([sys.executable, "-c", code, "compare", str(run.path), str(other), "--out",
                             str(tmp_path / "cli")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "**model** ≠" in result.stdout and (tmp_path / "cli" / "comparison.csv").exists()


def _cli(*args, timeout: int = 300):
    import sys

    return subprocess.run([sys.executable, "-m", "imgclf", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_report_and_compare_have_help_with_an_example():
    for command in ("report", "compare", "evaluate"):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "example:" in result.stdout, command
    assert "--data DIR" in _cli("evaluate", "--help").stdout and "--no-report" in _cli("evaluate", "--help").stdout


def test_evaluate_data_with_an_unknown_class_is_an_error_naming_it(reported_run, tmp_path):
    run, _, _ = reported_run
    other = make_class_folder(tmp_path / "elsewhere", per_class=3, classes=["circle"])
    (other / "hexagon").mkdir()
    for path in sorted((other / "circle").iterdir())[:2]:
        path.rename(other / "hexagon" / path.name)
    result = _cli("evaluate", run.path, "--data", other, "--no-report")
    assert result.returncode == 1
    assert "error:" in result.stderr and "not trained on: 'hexagon'." in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_evaluate_command_no_report_keeps_the_page_and_report_adds_the_new_evaluation(reported_run):
    run, _, _ = reported_run
    page = run.path / "report.html"
    before = page.read_text(encoding="utf-8")
    result = _cli("evaluate", run.path, "--split", "val", "--no-report")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "95% interval" in result.stdout and "report:" not in result.stdout
    assert (run.path / "eval" / "val" / "metrics.json").exists() and (run.path / "eval" / "val" / "calibration.png").exists()
    assert page.read_text(encoding="utf-8") == before
    result = _cli("report", run.path)
    assert result.returncode == 0, result.stderr[-2000:]
    after = page.read_text(encoding="utf-8")
    assert "Evaluation: val" in after and "Evaluation: train" in after


def test_an_evaluation_of_another_run_is_refused(reported_run, tmp_path):
    import imgclf

    run, evaluation, _ = reported_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        data = make_class_folder(tmp_path / "data", per_class=8)
        other = imgclf.train(data, model="mlp", hidden=(16,), epochs=1, batch_size=8, out=tmp_path / "other",
                             verbose=0, progress=False)
        other_evaluation = imgclf.evaluate(other, "train", progress=False)
    pictures = sorted(p.name for p in run.eval_dir("train").iterdir())
    with pytest.raises(ValueError, match=r"The evaluation of train passed is not one of .*run: its classes or numbers "
                                         r"differ from .*metrics.json. Pass the evaluation that imgclf.evaluate"):
        imgclf.report(run, other_evaluation)
    assert sorted(p.name for p in run.eval_dir("train").iterdir()) == pictures
    assert imgclf.report(run, evaluation)[-1].name == "report.html"


# Class names that are long, right-to-left or hold control characters ----------------------------------------------

PLATE = "escherichia_coli_k12_substrain_mg1655_colony_morphology_plate_{}"
RIGHT_TO_LEFT = "\u202eevil.exe"  # a right-to-left override: shown as "exe.live" unless isolated
HEBREW = "שלום עולם"
TAB = "tab\there"
AWKWARD = {PLATE.format(1): "circle", PLATE.format(2): "square", RIGHT_TO_LEFT: "triangle", HEBREW: "circle",
           TAB: "square"}


@pytest.fixture(scope="module")
def awkward_run(tmp_path_factory):
    """An untrained MLP on classes with long, right-to-left and tab-holding names, evaluated by `imgclf evaluate`;
    returns the run and what the command printed."""
    import contextlib
    import io

    import imgclf
    from imgclf.cli import main

    root = tmp_path_factory.mktemp("awkward")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name, style in AWKWARD.items():
            patch.setitem(CLASS_STYLES, name, CLASS_STYLES[style])
        for seed, name in enumerate(AWKWARD):  # a seed each: classes drawn alike must not share identical files
            make_class_folder(root / "data", per_class=6, classes=[name], seed=seed)
        data = root / "data"
        run = imgclf.train(data, model="mlp", hidden=(8,), epochs=1, learning_rate=1e-9, batch_size=8,
                           out=root / "run", verbose=0, progress=False)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["evaluate", str(run.path), "--split", "train"]) == 0
    return run, printed.getvalue()


def test_evaluate_prints_control_and_bidi_characters_of_class_names_escaped(awkward_run):
    _, printed = awkward_run
    line = next(line for line in printed.splitlines() if line.startswith("highest error rates: "))
    assert "tab\\there" in line and "\\u202eevil.exe" in line  # as `imgclf scan` prints them
    assert "\t" not in printed and "\u202e" not in printed


def _evaluation_with_gallery(classes, y_true, y_pred):
    """An evaluation whose every mistake is in the gallery, with blank pixels."""
    from imgclf.evaluation import evaluate_predictions

    probabilities = np.full((len(y_true), len(classes)), 0.1 / (len(classes) - 1))
    probabilities[np.arange(len(y_true)), y_pred] = 0.9
    evaluation = evaluate_predictions(np.array(y_true), probabilities, classes)
    evaluation.gallery = [{"index": i, "image": np.zeros((8, 8, 3), np.uint8), "heatmap": None}
                          for i in range(len(y_true)) if y_true[i] != y_pred[i]]
    return evaluation


def _gallery_captions(evaluation) -> list[str]:
    import matplotlib.pyplot as plt

    from imgclf.reporting.figures import gallery_figure

    figure = gallery_figure(evaluation)
    try:
        return [ax.get_title(loc="left") for ax in figure.axes if ax.get_title(loc="left")]
    finally:
        plt.close(figure)


@pytest.mark.parametrize("classes", [
    [PLATE.format(i) for i in range(1, 5)],  # they share a long start
    [f"{'a' * 30}_{i}_{'b' * 30}" for i in range(4)],  # they share a long start and a long end
], ids=["same-start", "same-start-and-end"])
def test_class_names_that_look_alike_keep_distinct_labels_in_the_figures(classes):
    import matplotlib.pyplot as plt

    from imgclf.reporting import confusion_matrix_figure

    evaluation = _evaluation_with_gallery(classes, [0, 1, 2, 3], [1, 2, 3, 0])
    figure = confusion_matrix_figure(evaluation)
    try:
        labels = [t.get_text() for t in figure.axes[0].get_yticklabels() if t.get_text()]
    finally:
        plt.close(figure)
    assert len(set(labels)) == 4 and all(len(label) <= 32 + 2 for label in labels)
    captions = _gallery_captions(evaluation)
    trues = [caption.split("\n")[0] for caption in captions]
    assert len(set(trues)) == 4, trues
    if classes[0].startswith("escherichia"):
        assert labels[2] == "\u2068escherichia_col…rphology_plate_3\u2069"
        assert trues[2] == "#3 true \u2068escherichia…logy_plate_3\u2069"


def test_figure_captions_escape_control_characters_and_isolate_right_to_left_names():
    evaluation = _evaluation_with_gallery(["circle", RIGHT_TO_LEFT, HEBREW, TAB], [0, 0, 0], [1, 2, 3])
    captions = _gallery_captions(evaluation)
    # The confidence stays after the name: U+2068 ... U+2069 keeps the name's direction inside it.
    assert captions[0] == "#1 true \u2068circle\u2069\npredicted \u2068\\u202eevil.exe\u2069 90%"
    assert captions[1].endswith(f"predicted \u2068{HEBREW}\u2069 90%")
    assert captions[2].endswith("predicted \u2068tab\\there\u2069 90%")  # a tab would be drawn as a box


def _font_drawing(path: Path, family: str, characters: str) -> Path:
    """A TrueType font of `family` that draws each of `characters` as a filled square."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def square():
        pen = TTGlyphPen(None)
        for point in ((100, 0), (100, 700), (800, 700), (800, 0)):
            (pen.lineTo if point != (100, 0) else pen.moveTo)(point)
        pen.closePath()
        return pen.glyph()

    names = [".notdef", *(f"g{i}" for i in range(len(characters)))]
    font = FontBuilder(1000, isTTF=True)
    font.setupGlyphOrder(names)
    font.setupCharacterMap({ord(c): f"g{i}" for i, c in enumerate(characters)})
    font.setupGlyf({name: square() for name in names})
    font.setupHorizontalMetrics({name: (1000, 100) for name in names})
    font.setupHorizontalHeader(ascent=800, descent=-200)
    font.setupNameTable({"familyName": family, "styleName": "Regular"})
    font.setupOS2()
    font.setupPost()
    font.save(str(path))
    return path


def test_a_class_name_in_a_script_matplotlib_lacks_is_drawn_with_an_installed_font(tmp_path, monkeypatch):
    import warnings

    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    from imgclf.reporting import figures

    classes = ["\u732b", "\u72ac", "cow"]  # cat and dog in Chinese: matplotlib's own fonts have no CJK

    def drawn(path):
        """The PNG `plot_confusion_matrix` writes, and the warnings of matplotlib drawing it again as it is."""
        figure = figures.confusion_matrix_figure(_evaluation_with_gallery(classes, [0, 1, 2], [1, 0, 2]))
        try:
            figures._use_installed_fonts_for_missing_glyphs(figure)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                figure.savefig(path, format="png", dpi=100)
        finally:
            plt.close(figure)
        return path.read_bytes(), [w for w in caught if "missing from font" in str(w.message)]

    boxes, missing = drawn(tmp_path / "boxes.png")
    assert missing  # the control: without a font that has them, the names are boxes
    monkeypatch.setattr(font_manager.fontManager, "ttflist", list(font_manager.fontManager.ttflist))
    font_manager.fontManager.addfont(str(_font_drawing(tmp_path / "han.ttf", "Imgclf Test Han", "\u732b\u72ac")))
    figures._families_having.cache_clear()
    try:
        drawn_with_font, missing = drawn(tmp_path / "han.png")
    finally:
        figures._families_having.cache_clear()
    assert missing == [] and drawn_with_font != boxes


def test_report_of_long_class_names_fits_the_window_and_isolates_names(awkward_run, browser):
    run, _ = awkward_run
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert f"<bdi>{RIGHT_TO_LEFT}</bdi>" in page and f"<bdi>{HEBREW}</bdi>" in page
    browser.get((run.path / "report.html").as_uri())
    width = browser.execute_script("return window.innerWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    for table in browser.execute_script("return Array.from(document.querySelectorAll('table'), t => t.scrollWidth)"):
        assert table <= width
    # The path column keeps room for a readable path, not five characters a line.
    paths = browser.execute_script("return Array.from(document.querySelectorAll('td.path'), td => td.clientWidth)")
    assert paths and min(paths) >= 200
    # In the "top 3" cells, the percentage that follows a right-to-left name is drawn after (right of) it.
    after = browser.execute_script("""
        var found = [];
        document.querySelectorAll('td.name bdi').forEach(function (bdi) {
          var next = bdi.nextSibling;
          if (!next || next.nodeType !== 3 || !/%/.test(next.data)) return;
          var range = document.createRange();
          range.setStart(next, next.data.indexOf('%'));
          range.setEnd(next, next.data.indexOf('%') + 1);
          var name = bdi.getBoundingClientRect(), percent = range.getBoundingClientRect();
          if (Math.abs(percent.top - name.top) < 2) found.push([bdi.textContent, percent.left >= name.right - 1]);
        });
        return found;""")
    assert any(name in (RIGHT_TO_LEFT, HEBREW) for name, _ in after), after
    assert all(right for _, right in after), after


def test_a_picture_shrunk_to_the_page_opens_at_full_size_on_a_click(reported_run, browser):
    from selenium.webdriver.common.by import By

    run, _, _ = reported_run
    size = browser.get_window_size()
    browser.set_window_size(420, 900)  # narrower than the confusion matrix, as a matrix of many classes is
    try:
        browser.get((run.path / "report.html").as_uri())
        matrix = browser.find_element(By.CSS_SELECTOR, "img[alt^='confusion matrix of']")
        natural, shown = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].clientWidth]", matrix)
        assert shown < natural and matrix.get_attribute("title") == "click to see it at full size"
        page_width = browser.execute_script("return document.documentElement.scrollWidth")
        matrix.click()
        assert browser.execute_script("return arguments[0].clientWidth", matrix) == natural
        # The picture scrolls inside its figure; the page keeps its width.
        assert browser.execute_script("return document.documentElement.scrollWidth") == page_width
        matrix.click()
        assert browser.execute_script("return arguments[0].clientWidth", matrix) == shown
    finally:
        browser.set_window_size(size["width"], size["height"])


def _copy_with_evaluation(run, folder: Path):
    """A copy of a run with its evaluation of the train split (`copy_of_run` leaves eval/ out)."""
    copy = copy_of_run(run, folder)
    shutil.copytree(run.path / "eval" / "train", copy.path / "eval" / "train")
    return copy


def test_report_of_an_evaluation_stopped_part_way_says_so_and_states_nothing_false(reported_run, tmp_path):
    from imgclf.reporting import write_report

    run, _, _ = reported_run
    copy = _copy_with_evaluation(run, tmp_path / "stopped")
    folder = copy.path / "eval" / "train"
    for path in folder.iterdir():
        if path.name != "metrics.json":
            path.unlink()  # killed right after metrics.json was written
    page = write_report(copy).read_text(encoding="utf-8")
    assert "This evaluation is incomplete</b>: confusion_matrix.csv, per_class.csv, most_confused.csv, " \
           "misclassified.csv are missing beside metrics.json" in page
    assert f"Run <code>imgclf evaluate {copy.path} --split train</code> again" in page
    assert "No class was mistaken for another" not in page and "Confusion matrices" not in page
    assert "(an incomplete evaluation, see below)" in page

    # The new metrics.json of another folder beside the files of the evaluation before it
    shutil.rmtree(folder)
    shutil.copytree(run.path / "eval" / "train", folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    metrics.update(images=metrics["images"] - 3, errors=0)
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    page = write_report(copy).read_text(encoding="utf-8")
    assert f"metrics.json counts {metrics['images']} images and 0 mistakes, but per_class.csv counts " \
           f"{metrics['images'] + 3} images" in page
    assert "No class was mistaken for another" not in page and "Per class" not in page


def test_report_of_an_evaluation_without_its_pictures_says_how_to_draw_them(reported_run, tmp_path):
    from imgclf.reporting import write_report

    run, _, _ = reported_run
    copy = _copy_with_evaluation(run, tmp_path / "numbers-only")
    for path in (copy.path / "eval" / "train").glob("*.png"):
        path.unlink()  # imgclf.evaluate without imgclf.report
    page = write_report(copy).read_text(encoding="utf-8")
    assert ("The pictures confusion_matrix.png, confusion_matrix_normalized.png, calibration.png are missing: "
            f"<code>imgclf evaluate {copy.path} --split train</code> draws them.") in page
    assert "Per class" in page and "This evaluation is incomplete" not in page


def test_report_on_a_metrics_json_without_a_key_names_the_file_and_the_fix(reported_run, tmp_path, capsys):
    from imgclf.cli import main

    run, _, _ = reported_run
    copy = _copy_with_evaluation(run, tmp_path / "edited")
    metrics = copy.path / "eval" / "train" / "metrics.json"
    metrics.write_text("{}", encoding="utf-8")
    assert main(["report", str(copy.path)]) == 1
    error = capsys.readouterr().err
    assert error == (f"imgclf report: error: {metrics} has no number for images, classes, accuracy, error_rate, "
                     "errors, macro_f1: it was edited by hand or written by another version of imgclf. Evaluate "
                     f"again with `imgclf evaluate {copy.path} --split train`.\n")


def test_report_shows_undefined_per_class_values_as_a_dash(reported_run, tmp_path):
    import csv

    from imgclf.reporting import write_report

    run, _, _ = reported_run
    copy = _copy_with_evaluation(run, tmp_path / "undefined")
    folder = copy.path / "eval" / "train"
    with open(folder / "per_class.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[0].update(precision="", recall="", f1="")  # a class never predicted and without images: undefined
    with open(folder / "per_class.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    metrics.update(macro_precision=None)  # no class the images hold was predicted
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    page = write_report(copy).read_text(encoding="utf-8")
    assert "<tr><td>macro precision</td><td>–</td></tr>" in page
    row = re.search(r"<tr><td class=\"name\"><bdi>" + re.escape(html.escape(rows[0]["class"])) + r"</bdi></td>(.*?)</tr>",
                    page).group(1)
    assert row.startswith('<td class="num" data-sort="">–</td>' * 3)


def test_report_redraws_training_curves_older_than_history_csv(reported_run, tmp_path):
    import base64
    import csv

    from imgclf.reporting import write_report

    run, _, _ = reported_run
    copy = copy_of_run(run, tmp_path / "resumed")
    curves = copy.path / "training_curves.png"
    before = curves.read_bytes()
    with open(copy.history_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(copy.history_path, "a", newline="", encoding="utf-8") as handle:  # as `--resume` adds an epoch
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerow({**rows[-1], "epoch": len(rows)})
    page = write_report(copy).read_text(encoding="utf-8")
    assert "<p>2 epoch(s)" in page
    assert curves.read_bytes() != before
    embedded = re.search(r'<img src="data:image/png;base64,([^"]*)" alt="training curves">', page).group(1)
    assert base64.b64decode(embedded) == curves.read_bytes()


def test_report_of_a_run_whose_training_stopped_says_how_to_continue_it(reported_run, tmp_path):
    from imgclf.reporting import write_report

    run, _, _ = reported_run
    copy = copy_of_run(run, tmp_path / "killed")
    copy.model_path.unlink()
    copy.checkpoints.mkdir(exist_ok=True)
    (copy.checkpoints / "state.json").write_text(json.dumps({"epoch": 0}), encoding="utf-8")
    page = write_report(copy).read_text(encoding="utf-8")
    assert ("<b>This run has no model.keras yet</b>: its training stopped after epoch 1 of 1. Continue it with "
            f"`imgclf train DATA --out {copy.path} --resume`, DATA being the folder it was trained on.") in page
    assert "Not evaluated yet" not in page


@pytest.mark.parametrize("heatmap", [False, True], ids=["no-heat-map", "heat-map"])
def test_gallery_captions_of_long_class_names_do_not_run_into_each_other(heatmap):
    import matplotlib.pyplot as plt

    from imgclf.reporting.figures import gallery_figure

    evaluation = _evaluation_with_gallery([PLATE.format(i) for i in range(1, 5)], [0, 1, 2, 3, 0], [1, 2, 3, 0, 2])
    for item in evaluation.gallery:
        item["heatmap"] = np.ones((8, 8)) if heatmap else None
    figure = gallery_figure(evaluation)
    try:
        renderer = figure.canvas.get_renderer()
        titles = [ax.title if ax.get_title() else ax._left_title for ax in figure.axes]
        boxes = [t.get_window_extent(renderer) for t in titles if t.get_text()]
    finally:
        plt.close(figure)
    assert len(boxes) == 5
    for left, right in zip(boxes[:4], boxes[1:4]):  # the first row of four captions, left to right
        assert left.x1 <= right.x0


def test_an_evaluation_saved_again_leaves_no_picture_of_the_numbers_before(reported_run, tmp_path):
    from imgclf.reporting import write_report

    run, evaluation, _ = reported_run
    copy = _copy_with_evaluation(run, tmp_path / "again")
    folder = copy.path / "eval" / "train"
    (folder / ".confusion_matrix.0a1b2c3d.tmp.png").write_bytes(b"left by a process killed while drawing")
    evaluation.save(folder)  # new numbers: a process killed now has not drawn their pictures
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".png" or p.name.startswith(".")) == []
    page = write_report(copy).read_text(encoding="utf-8")
    assert "The pictures confusion_matrix.png, confusion_matrix_normalized.png, calibration.png are missing" in page


def test_figures_of_names_the_font_lacks_warn_nothing_and_leave_the_warning_filters_as_they_were(tmp_path):
    import warnings

    import numpy as np

    from imgclf.evaluation import evaluate_predictions
    from imgclf.reporting.figures import plot_confusion_matrix

    evaluation = evaluate_predictions(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]),
                                      ["日本の猫", "🐱 cat"], split="test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        plot_confusion_matrix(evaluation, tmp_path / "matrix.png")
        assert list(warnings.filters) == filters
    assert (tmp_path / "matrix.png").exists()
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_the_confusion_matrix_stops_growing_at_6000_pixels_and_its_labels_shrink_instead():
    from imgclf.reporting import confusion_matrix_layout

    assert confusion_matrix_layout(480) == pytest.approx((6.0, 60.0))
    points, side = confusion_matrix_layout(1000)
    assert side == 60.0 and points == pytest.approx(60.0 * 72 / 1.5 / 1000)  # still 1.5 lines a class
