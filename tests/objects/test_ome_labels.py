"""Instance labels into OME-Zarr as NGFF image-labels: one value an object (napari colours each one
apart: no class colours are written), a properties entry an object from the object table (its class
and area in µm²), the pyramid nearest-sampled, readable by ome-zarr-py and valid by ome-zarr-models.
"""

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from support import ngff_models
from test_instances import class_map

import seamless_dask as sd
from seamless_dask.exceptions import OptionError
from seamless_dask.graph.layers import array_expr

ome_zarr = pytest.importorskip("ome_zarr")
pytest.importorskip("ome_zarr_models")
PIXEL = 0.5  # µm


def slide_map(shape=(300, 260)):
    labels = class_map(13, shape, smooth=2.5)
    coords = {
        d: (d, PIXEL * np.arange(n), {"units": "micrometer"})
        for d, n in zip("yx", shape, strict=True)
    }
    array = xr.DataArray(da.from_array(labels, 128), dims=("y", "x"), coords=coords)
    array.attrs.update(pixel_size=[PIXEL, PIXEL], pixel_unit="micrometer")
    array.attrs["class_names"] = ["background", "nuclei", "stroma"]
    return array


def test_instances_go_out_as_ngff_image_labels_with_a_property_entry_an_object(tmp_path):
    labels = slide_map()
    ids = sd.instances(labels)
    table = sd.object_table(labels)
    out = tmp_path / "nuclei.ome.zarr"
    sd.to_ome_zarr(ids, out, levels=2, properties=table)
    group = zarr.open_group(str(out), mode="r")
    label = group.attrs["image-label"]
    assert "colors" not in label  # one colour an object, the viewer's: not the classes'
    computed = table.compute()
    entries = {p["label-value"]: p for p in label["properties"]}
    assert set(entries) == set(computed.index) and len(entries) > 50
    first = computed.index[0]
    assert entries[first]["class"] == int(computed.loc[first, "class"])
    assert entries[first]["area"] == pytest.approx(computed.loc[first, "area_px"] * PIXEL**2)
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in group.attrs["multiscales"][0]["datasets"]
    ]
    assert scales == [[PIXEL, PIXEL], [2 * PIXEL, 2 * PIXEL]]
    level0 = ids.compute().values
    np.testing.assert_array_equal(group["0"][...], level0)
    np.testing.assert_array_equal(group["1"][...], level0[::2, ::2])  # nearest: ids never blended
    _, image_label, _ = ngff_models("0.4")
    model = image_label.from_zarr(group)
    assert len(model.attributes.image_label.properties) == len(entries)
    if not array_expr():  # ome-zarr-py reads with da.from_zarr, which array-expr lacks
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader

        node = next(iter(Reader(parse_url(str(out)))()))
        assert set(node.metadata["properties"]) == set(entries)


def test_properties_must_be_a_table_indexed_by_label_value(tmp_path):
    ids = sd.instances(slide_map((64, 64)))
    with pytest.raises(OptionError, match="indexed by label value"):
        sd.to_ome_zarr(ids, tmp_path / "x.ome.zarr", properties=[{"area": 3}])
