"""Metrics over rasters of any size, checked against scikit-learn on the same pixels."""

import json

import dask.array as da
import numpy as np
import pytest
import rasterio

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.cli import main
from seamless_dask.demo.scene import write_scene_geotiff
from seamless_dask.exceptions import DimensionError, OptionError
from seamless_dask.metrics import confusion_matrix, scores

sk = pytest.importorskip("sklearn.metrics")  # the reference the metrics are checked against

RNG = np.random.default_rng(7)


def _maps(shape=(301, 257), classes=5):
    truth = RNG.integers(0, classes, shape).astype(np.uint8)
    prediction = np.where(RNG.random(shape) < 0.7, truth, RNG.integers(0, classes, shape)).astype(
        np.uint8
    )
    return prediction, truth


@pytest.mark.parametrize("chunks", [(301, 257), (64, 50), (17, 256)])
def test_the_blockwise_confusion_matrix_equals_scikit_learn_whatever_the_chunking(chunks):
    prediction, truth = _maps()
    truth[:20, :30] = 255  # unlabelled
    prediction[-5:, :] = 254  # nodata in the prediction
    keep = (truth != 255) & (prediction != 254)
    expected = sk.confusion_matrix(truth[keep], prediction[keep], labels=range(5))
    lazy = da.from_array(prediction, chunks=chunks)
    got = confusion_matrix(
        lazy, da.from_array(truth, chunks=(100, 100)), 5, ignore_index=255, nodata=254
    )
    np.testing.assert_array_equal(got, expected)


def test_scores_equal_scikit_learns_per_class_and_averaged():
    prediction, truth = _maps()
    prediction[prediction == 4] = 3  # class 4 is never predicted: precision has no value there
    result = scores(prediction, truth, 5)
    p, t = prediction.ravel(), truth.ravel()
    kw = {"labels": range(5), "average": None}
    np.testing.assert_allclose(result.iou, sk.jaccard_score(t, p, **kw))
    np.testing.assert_allclose(result.dice, sk.f1_score(t, p, **kw))
    np.testing.assert_allclose(
        result.precision, sk.precision_score(t, p, zero_division=np.nan, **kw)
    )
    assert np.isnan(result.precision[4]) and result.iou[4] == 0
    np.testing.assert_allclose(result.recall, sk.recall_score(t, p, **kw))
    assert result.accuracy == pytest.approx(sk.accuracy_score(t, p))
    assert result.mean_iou == pytest.approx(np.nanmean(sk.jaccard_score(t, p, **kw)))


def test_a_class_absent_from_truth_and_prediction_has_no_score_and_leaves_the_mean_alone():
    truth = np.array([[0, 0], [1, 1]])
    result = scores(truth, truth, 3)
    assert np.isnan(result.iou[2]) and result.mean_iou == 1.0
    assert result.to_dict()["iou"] == [1.0, 1.0, None]


def test_bad_maps_are_refused_naming_the_value_and_the_fix():
    prediction, truth = _maps(classes=5)
    with helpers.raises_mentioning(OptionError, ["class 4", "0 .. 3", "num_classes=4"]):
        confusion_matrix(prediction, truth, 4)
    with helpers.raises_mentioning(DimensionError, ["same shape", "(301, 257)", "(300, 257)"]):
        confusion_matrix(prediction, truth[:300], 5)
    with helpers.raises_mentioning(DimensionError, ["integer classes", "float32", "argmax"]):
        confusion_matrix(prediction.astype("float32"), truth, 5)


def test_cli_evaluates_a_written_cog_against_label_raster_skipping_nodata(tmp_path, capsys):
    scene = write_scene_geotiff(tmp_path / "scene.tif", size=300)
    labels = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    sd.to_cog(labels, tmp_path / "pred.tif")
    # in memory from here (array-expr arrays have no __array__, dask#11922)
    labels = labels.compute()
    truth = labels.values.copy()
    truth[truth == 255] = 0  # the truth has labels everywhere: the prediction's nodata is left out
    truth[:50, :] = 1 - truth[:50, :]  # the truth disagrees on the first 50 rows
    with rasterio.open(tmp_path / "pred.tif") as pred:
        profile = {**pred.profile, "driver": "GTiff", "nodata": None}
    with rasterio.open(tmp_path / "truth.tif", "w", **profile) as out:
        out.write(truth, 1)
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred.tif"),
                str(tmp_path / "truth.tif"),
                "--num-classes",
                "2",
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    valid = labels.values != 255
    expected = sk.confusion_matrix(truth[valid], labels.values[valid], labels=[0, 1])
    assert printed["confusion_matrix"] == expected.tolist()
    assert printed["accuracy"] == pytest.approx(
        sk.accuracy_score(truth[valid], labels.values[valid])
    )
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred.tif"),
                str(tmp_path / "truth.tif"),
                "--num-classes",
                "2",
            ]
        )
        == 0
    )
    assert "mean" in capsys.readouterr().out


def _truth_beside(pred_path, path, *, shift=(0, 0), crs=None, values=None):
    """A truth raster with the prediction's pixels, moved by ``shift`` pixels or put in ``crs``."""
    with rasterio.open(pred_path) as pred:
        profile = {**pred.profile, "driver": "GTiff", "nodata": None}
        data = pred.read(1) if values is None else values
    transform = profile["transform"]
    profile["transform"] = transform * rasterio.Affine.translation(shift[1], shift[0])
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.where(data == 255, 0, data).astype(profile["dtype"]), 1)
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    scene = write_scene_geotiff(folder / "scene.tif", size=200)
    labels = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    sd.to_cog(labels, folder / "pred.tif")
    return folder / "pred.tif"


def _evaluate(pred, truth, *extra):
    return main(["evaluate", str(pred), str(truth), "--num-classes", "2", *map(str, extra)])


def test_evaluate_refuses_a_truth_shifted_by_100_px_naming_the_offset(written, tmp_path, capsys):
    truth = _truth_beside(written, tmp_path / "t.tif", shift=(0, 100))
    assert _evaluate(written, truth) == 2
    err = capsys.readouterr().err.strip()
    assert "different grids" in err and "+100 columns" in err and "gdalwarp" in err
    assert err.count("\n") == 0


def test_evaluate_refuses_a_truth_in_another_crs(written, tmp_path, capsys):
    truth = _truth_beside(written, tmp_path / "t.tif", crs="EPSG:32632")
    assert _evaluate(written, truth) == 2
    err = capsys.readouterr().err
    assert "different CRSs" in err and "EPSG:32632" in err


def test_evaluate_on_the_same_grid_still_scores(written, tmp_path, capsys):
    truth = _truth_beside(written, tmp_path / "t.tif")
    assert _evaluate(written, truth, "--json") == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(1.0)


def test_evaluate_refuses_an_ignore_index_that_matches_no_pixel(written, tmp_path, capsys):
    truth = _truth_beside(written, tmp_path / "t.tif")
    assert _evaluate(written, truth, "--ignore-index", "99") == 2
    err = capsys.readouterr().err
    assert "--ignore-index 99 matches no pixel of the truth" in err


def test_the_api_warns_of_an_unused_ignore_index_and_still_scores():
    truth = np.array([[0, 1], [1, 0]])
    with pytest.warns(sd.exceptions.IgnoreIndexWarning, match="ignore_index=99"):
        matrix = confusion_matrix(truth, truth, 2, ignore_index=99)
    assert matrix.trace() == 4
