"""The GPU paths against the CPU's answers (marked ``gpu``: skipped without CUDA; run on a GPU machine
with ``pytest -m gpu``, as benchmarks/gpu_run.sh does).

Each test asks what a user on a GPU worker relies on: the same labels as on the CPU, logits within
float32's reach of them (cuDNN picks other kernels), autocast that keeps the labels, several dask
threads sharing one GPU without mixing batches, CUDA tensors in, and a GPU LocalCluster that gives
its worker the ``GPU=1`` resource and writes the same zarr as a CPU run.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers
from seamless_dask.cluster import local_cluster

pytestmark = pytest.mark.gpu

TILE, OVERLAP = 64, 16


def _image(h: int = 300, w: int = 280) -> np.ndarray:
    return helpers.structured_image(3, h, w).astype(np.float32) / 255


def _run(image, model, **kwargs):
    with dask.config.set(scheduler="threads", num_workers=kwargs.pop("threads", 2)):
        out = sd.segment(image, model, tile_size=TILE, overlap=OVERLAP, **kwargs)
        out = out.compute() if hasattr(out, "compute") else out
    if isinstance(out, torch.Tensor):
        return out.cpu().numpy()
    return np.asarray(out)


def test_labels_on_cuda_equal_the_cpu_and_logits_agree_to_float32():
    image, net = _image(), helpers.conv_net(bands=3, classes=4)
    cpu = _run(image, net, device="cpu", output="logits", num_classes=4)
    gpu = _run(image, net, device="cuda", output="logits", num_classes=4)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
    labels_cpu = _run(image, net, device="cpu")
    labels_gpu = _run(image, net, device="cuda")
    assert (labels_gpu == labels_cpu).mean() > 0.9999


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_keeps_the_labels(amp):
    image, net = _image(), helpers.conv_net(bands=3, classes=4)
    plain = _run(image, net, device="cuda")
    half = _run(image, net, device="cuda", amp=amp)
    assert (half == plain).mean() > 0.99


def test_several_dask_threads_share_one_gpu_without_mixing_batches():
    image, net = _image(520, 500), helpers.conv_net(bands=3, classes=4)
    one = _run(image, net, device="cuda", output="logits", num_classes=4, threads=1, chunks=128)
    four = _run(image, net, device="cuda", output="logits", num_classes=4, threads=4, chunks=128)
    np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)


def test_a_cuda_tensor_is_segmented_like_its_numpy_copy():
    image, net = _image(), helpers.conv_net(bands=3, classes=4)
    from_numpy = _run(image, net, device="cuda")
    from_tensor = _run(torch.from_numpy(image).cuda(), net, device="cuda")
    np.testing.assert_array_equal(from_tensor, from_numpy)


def test_the_users_module_stays_on_the_cpu_in_its_mode_and_is_never_an_inference_tensor():
    net = helpers.conv_net(bands=3, classes=4).train()
    _run(_image(), net, device="cuda")
    assert all(p.device.type == "cpu" and not p.is_inference() for p in net.parameters())
    assert net.training
    cpu = _run(_image(), net, device="cpu")  # the same module, on the CPU, after a GPU run
    np.testing.assert_array_equal(cpu, _run(_image(), net, device="cuda"))


def test_a_plain_callable_with_weights_on_the_cpu_names_the_device_to_give():
    net = helpers.conv_net(bands=3, classes=4).eval()

    def plain(x):  # not a module: its weights are where the user put them
        return net(x) * 1

    with pytest.raises(RuntimeError) as raised:
        _run(_image(), plain, device="cuda")
    assert "device='cpu'" in "\n".join(getattr(raised.value, "__notes__", []))


def test_a_monai_unet_on_cuda_matches_the_cpu():
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    net = nets.BasicUNet(
        spatial_dims=2, in_channels=3, out_channels=3, features=(8, 8, 16, 16, 32, 8)
    )
    image = _image(256, 256)
    cpu = _run(image, net, device="cpu", output="logits", num_classes=3)
    gpu = _run(image, net, device="cuda", output="logits", num_classes=3)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-2, atol=1e-3)


def test_the_gpu_local_cluster_runs_a_job_to_zarr_like_the_cpu(tmp_path):
    image, net = _image(400, 380), helpers.conv_net(bands=3, classes=4)
    expected = _run(image, net, device="cpu")
    with local_cluster(dashboard=False) as client:
        resources = [w["resources"] for w in client.scheduler_info()["workers"].values()]
        assert resources and all(r.get("GPU") == 1 for r in resources), resources
        scene = xr.DataArray(image, dims=("band", "y", "x")).chunk({"y": 200, "x": 190})
        result = sd.segment(scene, net, tile_size=TILE, overlap=OVERLAP)
        assert io.to_zarr(result, tmp_path / "labels.zarr") > 0
    written = xr.open_zarr(tmp_path / "labels.zarr", mask_and_scale=False)["labels"].values
    assert (written == expected).mean() > 0.9999
