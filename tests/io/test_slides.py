"""Issue 16: whole-slide inputs (OME-Zarr, OME-TIFF, SVS), OME-Zarr outputs, and classes viewers show.

Every check goes through a reader someone else wrote: tifffile and OpenSlide for the inputs, ome-zarr-py's
reader and writer, ome-zarr-models' NGFF schema models, and GDAL (rasterio's, through its C API) for the
COG's colour table and category names.
"""

import ctypes
import glob
import json
import os

import numpy as np
import pytest
import rasterio
import tifffile
import xarray as xr
import zarr
from support import ngff_models, tree_hash, write_ngff_image

import seamless_dask as sd
from seamless_dask.classes import default_palette
from seamless_dask.demo.slide import (
    SLIDE_CLASSES,
    SLIDE_PALETTE,
    synthetic_slide,
    tissue_model,
    write_slide_ome_tiff,
    write_slide_svs,
)
from seamless_dask.exceptions import OptionError, RasterError
from seamless_dask.graph.layers import array_expr
from seamless_dask.testing import raises_mentioning
from seamless_dask.viz import quicklook as viz

ome_zarr = pytest.importorskip("ome_zarr")
ARRAY_EXPR = array_expr()
# ome-zarr-py 0.18 reads with da.from_zarr, which dask 2026.8's array-expr engine does not have (upstream)
needs_legacy_dask = pytest.mark.skipif(
    ARRAY_EXPR, reason="ome-zarr-py 0.18 reads with da.from_zarr: not on array-expr"
)
NAMES = list(SLIDE_CLASSES)
OPTIONS = {"tile_size": 128, "overlap": 32, "normalize": (0, 255), "chunks": 256}


@pytest.fixture(scope="module")
def slide_tiff(tmp_path_factory):
    return write_slide_ome_tiff(
        tmp_path_factory.mktemp("slide") / "slide.ome.tif", (700, 600), levels=3
    )


def write_ome_zarr(path, image, zarr_format=2, pixel_size=0.25):
    """An OME-Zarr image written by ome-zarr-py (NGFF 0.4 or 0.5), as QuPath or bioformats2raw would leave one.

    ome-zarr-py 0.18 cannot write under dask's array-expr engine (it asks for ``Array.chunksize``): there, the
    same layout is written by hand with zarr, levels s0-s2 and NGFF's metadata.
    """
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    if ARRAY_EXPR:
        return write_ngff_image(path, image, zarr_format, pixel_size)
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    fmt = FormatV04() if zarr_format == 2 else FormatV05()
    write_image(
        image,
        group,
        axes="cyx",
        fmt=fmt,
        scale_factors=(2, 4),
        scale={"c": 1.0, "y": pixel_size, "x": pixel_size},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )
    return path


def gdal_category_names(path):
    """Band 1's category names as GDAL reads them (rasterio's own libgdal, through its C API)."""
    lib = ctypes.CDLL(
        glob.glob(
            os.path.join(os.path.dirname(rasterio.__file__), "..", "rasterio.libs", "libgdal-*")
        )[0]
    )
    lib.GDALAllRegister()
    lib.GDALOpen.restype, lib.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype, lib.GDALGetRasterBand.argtypes = (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_int],
    )
    lib.GDALGetMetadata.restype, lib.GDALGetMetadata.argtypes = (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_char_p],
    )
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    dataset = lib.GDALOpen(str(path).encode(), 0)
    try:
        # GDAL reads the PAM sidecar lazily, on a first metadata request
        lib.GDALGetMetadata(dataset, None)
        names = lib.GDALGetRasterCategoryNames(lib.GDALGetRasterBand(dataset, 1))
        out = []
        while names and names[len(out)] is not None:
            out.append(names[len(out)].decode())
        return out
    finally:
        lib.GDALClose(dataset)


# 1. Whole-slide inputs, lazily


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_ome_zarr_opens_at_its_root_level_by_level_with_physical_coords(tmp_path, zarr_format):
    image = np.moveaxis(synthetic_slide((300, 260)), -1, 0)
    path = write_ome_zarr(tmp_path / "slide.ome.zarr", image, zarr_format)
    slide = sd.open_raster(path)
    assert slide.dims == ("band", "y", "x") and slide.chunks is not None  # lazy
    assert np.array_equal(slide.compute().values, image)
    assert slide.attrs["pixel_size"] == [0.25, 0.25] and slide.attrs["pixel_unit"] == "micrometer"
    assert slide.attrs["ngff_version"] == ("0.4" if zarr_format == 2 else "0.5")
    assert (
        slide.x.values[:3].tolist() == [0.0, 0.25, 0.5] and slide.x.attrs["units"] == "micrometer"
    )
    coarse = sd.open_raster(path, level=2)
    assert coarse.shape == (3, 75, 65) and coarse.attrs["pixel_size"] == [1.0, 1.0]
    with raises_mentioning(RasterError, ["3 multiscale levels", "level=3"]):
        sd.open_raster(path, level=3)


def test_an_ome_tiff_pyramid_reads_lazily_with_its_pixel_size(slide_tiff):
    slide = sd.open_raster(slide_tiff)
    truth = np.moveaxis(tifffile.imread(slide_tiff), -1, 0)  # (y, x, 3) on disk: channels last
    assert (
        slide.dims == ("band", "y", "x") and slide.shape == truth.shape and slide.chunks is not None
    )
    assert np.array_equal(slide[:, 100:300, 50:250].compute().values, truth[:, 100:300, 50:250])
    assert slide.attrs["pixel_size"] == [0.5, 0.5] and slide.attrs["slide_levels"] == 3
    level = sd.open_raster(slide_tiff, level=2)
    assert np.array_equal(
        level.compute().values, np.moveaxis(tifffile.imread(slide_tiff, level=2), -1, 0)
    )
    assert level.attrs["pixel_size"] == [2.0, 2.0]


def test_an_svs_reads_the_same_through_tifffile_and_openslide(tmp_path):
    pytest.importorskip("openslide")
    path = write_slide_svs(tmp_path / "scan.svs", (520, 400), mpp=0.2527)
    by_tifffile, by_openslide = sd.open_raster(path), sd.open_raster(path, engine="openslide")
    assert by_tifffile.attrs["pixel_size"] == by_openslide.attrs["pixel_size"] == [0.2527, 0.2527]
    assert np.array_equal(by_tifffile.compute().values, by_openslide.compute().values)
    low = sd.open_raster(path, level=1), sd.open_raster(path, level=1, engine="openslide")
    assert low[0].shape == low[1].shape == (3, 130, 100)
    assert np.array_equal(low[0].compute().values, low[1].compute().values)


def test_a_slide_segments_and_trains_like_a_scene(slide_tiff):
    slide = sd.open_raster(slide_tiff)
    labels = sd.segment(slide, tissue_model(), **OPTIONS).compute()
    whole = sd.segment(slide.compute().values, tissue_model(), **OPTIONS)
    assert np.array_equal(labels.values, whole)  # read window by window, same as in memory
    assert set(np.unique(labels.values)) == {0, 1, 2}
    assert np.array_equal(labels.x.values, slide.x.values)  # physical coords carried
    dataset = sd.TileDataset(str(slide_tiff), tile_size=128, overlap=0)
    item = dataset[5]
    assert tuple(item["image"].shape) == (3, 128, 128)


# 2. OME-Zarr out


@pytest.fixture(scope="module")
def labels(slide_tiff):
    slide = sd.open_raster(slide_tiff)
    return sd.segment(
        slide, tissue_model(), **OPTIONS, class_names=NAMES, palette=list(SLIDE_PALETTE)
    )


@needs_legacy_dask
def test_labels_go_out_as_an_ngff_pyramid_that_ome_zarr_reads(labels, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "labels.ome.zarr"
    written = sd.to_ome_zarr(labels, out, levels=3)
    level0 = labels.compute().values
    nodes = list(Reader(parse_url(str(out)))())
    shapes = [tuple(d.shape) for d in nodes[0].data]
    done = [zarr.open_group(str(out), mode="r")[f"_seamless/done/{k}"][...] for k in range(3)]
    assert shapes == [(700, 600), (350, 300), (175, 150)] and written == sum(d.size for d in done)
    assert all(d.all() for d in done)
    for k, level in enumerate(nodes[0].data):
        # nearest: a label is never a blend
        assert np.array_equal(np.asarray(level), level0[:: 2**k, :: 2**k])
    metadata = nodes[0].metadata
    assert (
        metadata["properties"][0]["class"] == "nuclei"
        and metadata["properties"][2]["class"] == "background"
    )
    assert metadata["color"][1][:3] == pytest.approx([0xE8 / 255, 0x8F / 255, 0xB4 / 255])
    datasets = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]
    assert scales == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]
    _, image_label, _ = ngff_models("0.4")
    model = image_label.from_zarr(zarr.open_group(str(out), mode="r"))
    assert [
        p.model_dump(by_alias=True)["class"] for p in model.attributes.image_label.properties
    ] == NAMES
    assert sd.open_raster(out).attrs["class_names"] == NAMES  # and our own reader reads it back


def test_ngff_05_output_validates_and_a_broken_one_does_not(labels, tmp_path):
    out = tmp_path / "labels.ome.zarr"
    sd.to_ome_zarr(labels, out, zarr_format=3, levels=2)
    _, image_label, _ = ngff_models("0.5")
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == 3 and group.attrs["ome"]["version"] == "0.5"
    image_label.from_zarr(group)
    broken = dict(group.attrs)
    broken["ome"]["image-label"]["colors"][0]["rgba"] = [0, 0, 0]  # NGFF: four values
    zarr.open_group(str(out), mode="r+").attrs.update(broken)
    with pytest.raises(ValueError, match=r"rgba|colors"):
        image_label.from_zarr(zarr.open_group(str(out), mode="r"))


def test_probabilities_are_averaged_level_by_level_and_their_origin_moves(slide_tiff, tmp_path):
    slide = sd.open_raster(slide_tiff)[:, :300, :260]
    probs = sd.segment(slide, tissue_model(), **OPTIONS, output="probabilities")
    out = tmp_path / "probs.ome.zarr"
    sd.to_ome_zarr(probs, out, levels=2)
    group = zarr.open_group(str(out), mode="r")
    level0, level1 = group["0"][...], group["1"][...]
    expected = level0.astype(np.float64).reshape(3, 150, 2, 130, 2).mean(axis=(2, 4))
    assert (
        np.allclose(level1, expected, atol=1e-6)
        and group.attrs["seamless_layout"]["resampling"] == "mean"
    )
    transforms = group.attrs["multiscales"][0]["datasets"][1]["coordinateTransformations"]
    # the centre of the first 2 x 2 window, in µm
    assert transforms[1]["translation"] == [
        0.0,
        0.25,
        0.25,
    ]


def test_a_resumed_pyramid_writes_only_what_is_missing_and_refuses_another_job(labels, tmp_path):
    out = tmp_path / "labels.ome.zarr"
    sd.to_ome_zarr(labels, out, levels=3)
    before = {k: zarr.open_group(str(out))[k][...] for k in "012"}
    group = zarr.open_group(str(out), mode="r+")
    # a crash after one level-0 region and the level-1 chunk above it
    group["_seamless/done/0"][1, 1] = 0
    group["_seamless/done/1"][1, 1] = 0
    group["0"][288:, 288:] = 0
    group["1"][288:, 288:] = 0
    assert sd.to_ome_zarr(labels, out, levels=3, resume=True) == 2
    assert all(np.array_equal(zarr.open_group(str(out))[k][...], before[k]) for k in "012")
    record = json.loads(labels.attrs["seamless_job"])
    record["options"]["class_names"] = ["a", "b", "c"]
    other = labels.assign_attrs(seamless_job=json.dumps(record))
    with raises_mentioning(RasterError, ["another job", "options.class_names"]):
        sd.to_ome_zarr(other, out, levels=3, resume=True)
    with raises_mentioning(RasterError, ["exists", "overwrite=True"]):
        sd.to_ome_zarr(labels, out, levels=3)


@needs_legacy_dask
def test_labels_go_into_the_input_slides_labels_group_and_nowhere_else(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.writer import write_labels

    image = np.moveaxis(synthetic_slide((300, 260)), -1, 0)
    path = write_ome_zarr(tmp_path / "slide.ome.zarr", image)
    # someone's own
    write_labels(np.zeros((300, 260), "uint8"), zarr.open_group(str(path)), name="manual")
    untouched = tree_hash(path)
    slide = sd.open_raster(path)
    labels = sd.segment(slide, tissue_model(), **OPTIONS, class_names=NAMES)
    sd.to_ome_zarr(labels, path, label_name="tissue")
    assert tree_hash(path) == untouched  # the image is never written
    # kept, added
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["labels"] == [
        "manual",
        "tissue",
    ]
    nodes = list(Reader(parse_url(str(path)))())
    found = [n for n in nodes if n.zarr.path.rstrip("/").endswith("labels/tissue")]
    assert len(found) == 1 and found[0].metadata["properties"][1]["class"] == "tissue"
    assert found[0].zarr.root_attrs["image-label"]["source"] == {"image": "../../"}
    image_model, label_model, labels_model = ngff_models("0.4")
    # NGFF's labels group: valid
    labels_model.from_zarr(zarr.open_group(str(path / "labels"), mode="r"))
    label_model.from_zarr(zarr.open_group(str(path / "labels/tissue"), mode="r"))
    image_model.from_zarr(zarr.open_group(str(path), mode="r"))  # and the image with it
    # the other labels group: never replaced, even with overwrite
    with raises_mentioning(RasterError, ["not a zarr store seamless_dask wrote"]):
        sd.to_ome_zarr(labels, path, label_name="manual", overwrite=True)
    assert zarr.open_array(str(path / "labels/manual/s0"), mode="r").shape == (300, 260)
    with raises_mentioning(RasterError, ["(150, 130)", "(300, 260)"]):
        sd.to_ome_zarr(labels[::2, ::2], path, label_name="half")
    with raises_mentioning(RasterError, ["output", "is the input"]):
        sd.to_ome_zarr(labels, path)  # the slide itself as the output: refused as for any writer


# 3. Classes that viewers show


def test_the_cog_carries_a_colour_table_and_gdal_category_names(labels, tmp_path):
    out = tmp_path / "labels.tif"
    sd.to_cog(labels, out)
    with rasterio.open(out) as cog:
        table = cog.colormap(1)
        assert cog.colorinterp[0].name == "palette"
    assert [table[i] for i in range(3)] == [
        (0x5B, 0x2A, 0x86, 255),
        (0xE8, 0x8F, 0xB4, 255),
        (0xF4, 0xF4, 0xF4, 255),
    ]
    assert gdal_category_names(out) == NAMES
    assert sd.io.category_names(out) == NAMES
    plain = labels.copy()
    plain.attrs = {
        k: v for k, v in labels.attrs.items() if k not in ("class_names", "class_colors")
    }
    sd.to_cog(plain, out, overwrite=True)  # our sidecar goes with the names it described
    assert not os.path.exists(f"{out}.aux.xml") and gdal_category_names(out) == []
    with rasterio.open(out) as cog:  # the default palette still colours the classes
        assert cog.colormap(1)[0][:3] == tuple(default_palette(3)[0])
    with open(f"{out}.aux.xml", "w") as f:
        f.write(
            "<PAMDataset><PAMRasterBand band='1'><Metadata><MDI key='STATISTICS_MAXIMUM'>2</MDI></Metadata>"
            "</PAMRasterBand></PAMDataset>"
        )
    with raises_mentioning(RasterError, ["aux.xml", "not written by seamless_dask"]):
        sd.to_cog(labels, out, overwrite=True)


def test_zarr_attributes_carry_names_colours_and_cf_flags(labels, tmp_path):
    out = tmp_path / "labels.zarr"
    sd.to_zarr(labels, out)
    attrs = xr.open_zarr(out)["labels"].attrs
    assert attrs["class_names"] == NAMES and attrs["flag_values"] == [0, 1, 2]
    assert (
        attrs["flag_meanings"] == "nuclei tissue background"
        and attrs["class_colors"][0] == "#5b2a86"
    )


def test_the_quicklook_has_a_legend_with_the_class_colours(labels, tmp_path):
    from PIL import Image

    plain = Image.open(sd.quicklook(labels, tmp_path / "plain.png", legend=False))
    legend = np.asarray(Image.open(sd.quicklook(labels, tmp_path / "legend.png")).convert("RGB"))
    assert legend.shape[1] > plain.size[0] + 100
    swatches = legend[:, plain.size[0] :].reshape(-1, 3)
    for colour in ("5b2a86", "e88fb4"):
        assert (swatches == np.frombuffer(bytes.fromhex(colour), np.uint8)).all(axis=1).any()
    # from a written COG: its colour table and category names
    sd.to_cog(labels, tmp_path / "labels.tif")
    assert viz.written_classes(str(tmp_path / "labels.tif")).names == tuple(NAMES)


@pytest.mark.parametrize(
    ("names", "palette", "words"),
    [
        (["a", "b"], None, ["2 names", "3 classes"]),
        (["a", "a", "b"], None, ["distinct", "'a'"]),
        (["a", "b", "c"], ["#ff0000"], ["1 colours", "3 class_names"]),
        (["a", "b", "c"], ["red", "green", "blue"], ["#rrggbb", "'red'"]),
        ("a,b,c", None, ["list of names", "'a,b,c'"]),
    ],
)
def test_class_names_and_palette_mistakes_name_the_rule(slide_tiff, names, palette, words):
    with raises_mentioning(OptionError, words):
        sd.segment(
            sd.open_raster(slide_tiff),
            tissue_model(),
            **OPTIONS,
            class_names=names,
            palette=palette,
        )


def test_the_cli_writes_an_ome_zarr_with_names_and_into_a_slides_labels(
    slide_tiff, tmp_path, capsys
):
    from seamless_dask.cli import main

    model = "seamless_dask.demo.slide:tissue_model"
    common = [
        "--model",
        model,
        "--tile-size",
        "128",
        "--overlap",
        "32",
        "--normalize",
        "0/255",
        "--scheduler",
        "threads",
    ]
    names = [
        "--class-names",
        ",".join(NAMES),
        "--palette",
        ",".join(SLIDE_PALETTE),
        "--no-progress",
    ]
    out = tmp_path / "labels.ome.zarr"
    assert main(["segment", str(slide_tiff), str(out), *common, *names]) == 0
    group = zarr.open_group(str(out), mode="r")
    assert (
        group.attrs["image-label"]["properties"][0]["class"] == "nuclei"
        and group.attrs["seamless_complete"]
    )
    slide = write_ome_zarr(
        tmp_path / "slide.ome.zarr", np.moveaxis(synthetic_slide((260, 200)), -1, 0)
    )
    quick = ["--quicklook", str(tmp_path / "cells.png")]
    assert main(["segment", str(slide), "--label-name", "cells", *common, *names, *quick]) == 0
    assert zarr.open_group(str(slide / "labels"), mode="r").attrs["labels"] == ["cells"]
    # a group inside a store
    assert sd.open_raster(slide / "labels" / "cells").attrs["class_names"] == NAMES
    assert (tmp_path / "cells.png").stat().st_size > 0
    assert main(["segment", str(slide), *common]) == 2
    assert "OUTPUT is missing" in capsys.readouterr().err


# 4. The end-to-end example


def test_the_slide_example_runs_end_to_end(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "slide_example", Path(__file__).parents[2] / "examples/slide.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    made = example.run(tmp_path, size=1100)
    if not ARRAY_EXPR:  # ome-zarr-py's reader: legacy engine only
        # down to a viewer's overview
        assert made["levels"] == [
            (1100, 1100),
            (550, 550),
            (275, 275),
        ]
    assert (
        made["tiles"] == 25
        and made["tile_shape"] == (3, 256, 256)
        and made["pixel_size"] == [0.5, 0.5]
    )
    assert made["png"].stat().st_size > 0
    reread = sd.open_raster(made["labels"], level=1)
    assert reread.attrs["class_names"] == NAMES and reread.attrs["pixel_size"] == [1.0, 1.0]


def test_the_quicklook_of_a_pyramid_reads_a_coarse_level_only(slide_tiff, tmp_path):
    labels = sd.segment(sd.open_raster(slide_tiff), tissue_model(), **OPTIONS, class_names=NAMES)
    out = tmp_path / "labels.ome.zarr"
    sd.to_ome_zarr(labels, out, levels=3)
    level0 = zarr.open_array(str(out / "0"), mode="r+")
    level0[...] = 7  # spoil level 0: a quicklook of at most 200 px must not read it
    png = sd.quicklook(out, tmp_path / "q.png", max_size=200, image=slide_tiff, legend=False)
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    spoiled = viz.colorize(np.full((1, 1), 7, "uint8"), default_palette(8))[0, 0]
    assert not (pixels == spoiled).all(axis=-1).any()


def test_a_tiff_without_ome_or_aperio_metadata_takes_its_pixel_size_from_the_resolution_tags(
    tmp_path,
):
    path = tmp_path / "scan.tif"  # as NDPI files say it: pixels per centimetre
    tifffile.imwrite(
        path,
        synthetic_slide((300, 200)),
        tile=(128, 128),
        resolution=(20000, 25000),
        resolutionunit=3,
    )
    slide = sd.open_raster(path, engine="tifffile")
    assert (
        slide.attrs["pixel_size"] == pytest.approx([0.4, 0.5])
        and slide.attrs["pixel_unit"] == "micrometer"
    )
    # GDAL reads it too, without a pixel size
    assert sd.open_raster(path, engine="gdal").shape == slide.shape
    with raises_mentioning(RasterError, ["engine must be one of", "'pillow'"]):
        sd.open_raster(path, engine="pillow")


def test_overwrite_replaces_a_pyramid_seamless_dask_wrote(labels, tmp_path):
    out = tmp_path / "labels.ome.zarr"
    sd.to_ome_zarr(labels, out, levels=2)
    zarr.open_array(str(out / "1"), mode="r+")[...] = 9
    sd.to_ome_zarr(labels, out, levels=3, overwrite=True)
    group = zarr.open_group(str(out), mode="r")
    assert (
        sorted(k for k in group.array_keys()) == ["0", "1", "2"]
        and group.attrs["seamless_complete"]
    )
    assert np.array_equal(group["1"][...], labels.compute().values[::2, ::2])
