"""Resize policies: the shapes and content each gives, and a run's policy reaching evaluation and prediction."""

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.images import load_image
from imgclf.prediction import resize_image
from imgclf.config import ImageSpec

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def wide_image(path, height=20, width=40):
    """Red left quarter, green middle half, blue right quarter: twice as wide as high."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 4] = RED
    pixels[:, width // 4: 3 * width // 4] = GREEN
    pixels[:, 3 * width // 4:] = BLUE
    Image.fromarray(pixels).save(path)
    return path


def close(pixel, colour):
    return np.abs(pixel.astype(int) - colour).max() <= 8


@pytest.mark.parametrize("size", [(16, 16), (12, 30), (30, 12)])
@pytest.mark.parametrize("resize", ["stretch", "pad", "crop"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_policy_gives_exactly_the_image_size(tmp_path, size, resize, channels):
    path = wide_image(tmp_path / "wide.png")
    assert load_image(path, size=size, channels=channels, resize=resize).shape == (*size, channels)
    with Image.open(path) as image:
        assert resize_image(image, ImageSpec(*size, channels, resize)).shape == (*size, channels)


def test_stretch_keeps_everything_pad_adds_bands_crop_cuts_the_sides(tmp_path):
    path = wide_image(tmp_path / "wide.png")  # 20x40 into 16x16
    stretch = load_image(path, size=(16, 16), resize="stretch")
    assert close(stretch[8, 0], RED) and close(stretch[8, 8], GREEN) and close(stretch[8, 15], BLUE)
    assert close(stretch[0, 8], GREEN) and close(stretch[15, 8], GREEN)  # no bands: the image is squeezed

    pad = load_image(path, size=(16, 16), resize="pad")  # scaled to 8x16, centred, white above and below
    assert all(close(pad[row, 8], WHITE) for row in (0, 3, 12, 15))
    assert close(pad[8, 0], RED) and close(pad[8, 8], GREEN) and close(pad[8, 15], BLUE)

    crop = load_image(path, size=(16, 16), resize="crop")  # scaled to 16x32, the middle 16 columns kept
    assert all(close(crop[row, col], GREEN) for row in (0, 8, 15) for col in range(1, 15))
    assert crop[..., 1].min() > 200  # the red and blue quarters are cut off (the edge columns blend a little)

    grey_pad = load_image(path, size=(16, 16), channels=1, resize="pad")
    assert grey_pad[0, 8, 0] == 255 and grey_pad[8, 8, 0] < 255


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory):
    """A tiny model trained with resize="crop" on images twice as wide as high."""
    root = tmp_path_factory.mktemp("resize")
    for label, colour in (("left", RED), ("right", BLUE)):
        folder = root / "data" / label
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = np.full((10, 20, 3), 40 + 10 * i, np.uint8)
            pixels[:, :5] = colour if label == "left" else (0, 0, 0)
            pixels[:, 15:] = colour if label == "right" else (0, 0, 0)
            Image.fromarray(pixels).save(folder / f"{label}_{i}.png")
    run = imgclf.train(root / "data", model="mlp", hidden=(8,), epochs=1, image_size=(10, 10), resize="crop",
                       val=0.2, test=0.2, cache_dir=str(root / "cache"), out=root / "run", verbose=0, progress=False)
    return run


def test_evaluation_and_prediction_decode_with_the_run_policy(cropped_run):
    assert cropped_run.config().data.resize == "crop"
    model = cropped_run.load_model()
    test = [e for e in cropped_run.manifest().entries if e.split == "test"]

    def probabilities(resize):
        batch = np.stack([load_image(e.path, size=(10, 10), resize=resize) for e in test])
        return model.predict(batch, verbose=0)

    cropped, stretched = probabilities("crop"), probabilities("stretch")
    assert not np.allclose(cropped, stretched, atol=1e-4)  # the policies differ enough to tell them apart

    evaluation = imgclf.evaluate(cropped_run, "test", progress=False)
    assert [str(p) for p in evaluation.paths] == [e.path for e in test]
    np.testing.assert_allclose(evaluation.probabilities, cropped, atol=1e-5)

    predictor = imgclf.load(cropped_run)
    assert predictor.spec == ImageSpec(10, 10, 3, "crop")
    np.testing.assert_allclose(predictor.predict([e.path for e in test]), cropped, atol=1e-5)
    with Image.open(test[0].path) as image:  # a PIL image in memory goes the same way as its file
        np.testing.assert_allclose(predictor.predict([image.copy()]), cropped[:1], atol=1e-5)
