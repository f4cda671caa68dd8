import pickle

import numpy as np
import pytest
import torch

from seamless_dask import ModelOutputError, ModelRunner, ModelSpecError, OptionError, RunnerConfig
from seamless_dask import testing as helpers

TILES = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)


def _predict(model, **config):
    return ModelRunner(model, RunnerConfig(**config)).predict(TILES)


def test_module_scripted_file_callable_and_import_string_give_the_same_prediction(tmp_path):
    net = helpers.make_conv()
    expected = _predict(net)
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    for spec in (
        torch.jit.script(net),
        str(path),
        path,
        net.forward,
        "seamless_dask.testing:make_conv",
    ):
        np.testing.assert_allclose(_predict(spec), expected, rtol=1e-5, atol=1e-6)


def test_torch_export_program_with_dynamic_batch(tmp_path):
    net = helpers.make_conv()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    np.testing.assert_allclose(
        _predict(str(path), trust_model=True), _predict(net), rtol=1e-5, atol=1e-6
    )


def test_softmax_default_sums_to_one_and_sigmoid_and_none_differ():
    net = helpers.make_conv()
    probs = _predict(net)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    raw = _predict(net, activation=None)
    np.testing.assert_allclose(
        _predict(net, activation="sigmoid"), 1 / (1 + np.exp(-raw)), rtol=1e-5
    )


@pytest.mark.parametrize(
    "wrap", [helpers.DictOut, helpers.TupleOut, lambda m: lambda x: [m(x).numpy()]]
)
def test_dict_tuple_list_and_numpy_outputs_are_accepted(wrap):
    net = helpers.make_conv()
    # on the CPU: the plain callable returns numpy, and its module's weights stay where it put them
    np.testing.assert_allclose(
        _predict(wrap(net), device="cpu"), _predict(net, device="cpu"), rtol=1e-6
    )


def test_normalize_is_applied_per_band_in_input_units():
    out = _predict(helpers.Identity(), activation=None, normalize=((1, 2, 3), (2, 4, 8)))
    expected = (TILES - np.array([1, 2, 3]).reshape(1, 3, 1, 1)) / np.array([2, 4, 8]).reshape(
        1, 3, 1, 1
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    RunnerConfig(normalize=(0.5, 0.25)).check_bands(7)  # one value for all bands
    with pytest.raises(OptionError, match="3 values but the image has 4 bands"):
        RunnerConfig(normalize=((1, 2, 3), (1, 1, 1))).check_bands(4)


def test_integer_tiles_reach_the_model_as_float32():
    seen = []
    ModelRunner(lambda x: seen.append(x.dtype) or x, RunnerConfig(activation=None)).predict(
        (TILES * 1000).astype(np.uint16)
    )
    assert seen == [torch.float32]


def test_device_auto_is_cpu_without_a_gpu_and_the_model_runs_in_eval_mode():
    net = helpers.make_conv().train()
    runner = ModelRunner(net)
    runner.predict(TILES)
    assert runner.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not runner.model.training


def test_the_users_module_is_left_where_it_was_in_the_mode_it_was_in_and_still_trains():
    net = helpers.make_conv().train()
    before = [p.detach().clone() for p in net.parameters()]
    out = ModelRunner(net, RunnerConfig(activation=None)).predict(TILES)
    assert net.training and all(m.training for m in net.modules())
    assert all(not p.is_inference() and p.device.type == "cpu" for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # run in eval mode on a copy: the same as the user's module in eval mode
    np.testing.assert_allclose(out, net.eval()(torch.from_numpy(TILES)).detach().numpy(), rtol=1e-5)
    net.train()
    loss = net(torch.from_numpy(TILES)).square().mean()  # a training step after segmenting
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_module_for_another_device_is_copied_there_once_and_a_ready_one_is_used_as_is():
    from seamless_dask.model.loading import load

    net = helpers.make_conv().train()
    meta = torch.device("meta")
    moved = load(net, meta)
    assert moved is not net and moved is load(net, meta)  # one copy per process and device
    assert next(moved.parameters()).device.type == "meta"
    assert next(net.parameters()).device.type == "cpu" and net.training
    method = load(net.forward, meta)  # a module's bound method: bound to the copy
    assert method.__self__ is moved and next(net.parameters()).device.type == "cpu"
    ready = helpers.make_conv().eval()
    assert load(ready, torch.device("cpu")) is ready
    assert load(ready.forward, torch.device("cpu")).__self__ is ready


def test_an_unpickled_runner_moves_its_own_copy_in_place():
    runner = pickle.loads(pickle.dumps(ModelRunner(helpers.make_conv().train())))
    spec = runner.spec
    runner.predict(TILES)
    assert runner.model is spec and not spec.training  # no second copy on a worker


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(OptionError, match=r"no CUDA GPU is visible.*device='auto'"):
        _predict(helpers.make_conv(), device="cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(OptionError, match="device must be"):
        _predict(helpers.make_conv(), device="gpu0")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_such_pkg.models:build", ["cannot import module 'no_such_pkg.models'", "PYTHONPATH"]),
        ("seamless_dask.testing:nope", ["has no attribute 'nope'"]),
        ("seamless_dask.testing:failing_factory", ["raised RuntimeError: weights file is corrupt"]),
        ("seamless_dask.testing:NOT_A_MODEL", ["names a int, not a model"]),
        ("model_without_colon", ["neither an existing TorchScript file nor an import string"]),
        ("missing/model.pt", ["does not exist"]),
    ],
)
def test_bad_model_specs_name_the_problem(spec, words):
    with helpers.raises_mentioning(ModelSpecError, words):
        _predict(spec)


def test_not_torchscript_file_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(helpers.make_conv().state_dict(), path)
    with pytest.raises(ModelSpecError, match=r"torch\.jit\.save"):
        _predict(str(path))


def test_non_callable_model_is_a_type_error():
    with pytest.raises(ModelSpecError, match="got int"):
        ModelRunner(3)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            helpers.Downsampling(),
            ["spatial size (8, 8) differs from its input tile (16, 16)", "interpolate"],
        ),
        (lambda x: x[:, 0], ["expected (3, classes, 16, 16)", "(N, 1, H, W)"]),
        (lambda x: {"logits": x}, ["without an 'out' entry", "['logits']"]),
        (lambda x: "seg", ["returned a str"]),
        (lambda x: x[:, :1], ["softmax' over a single output channel", "sigmoid"]),
    ],
)
def test_bad_model_outputs_are_clear_errors(model, words):
    with helpers.raises_mentioning(ModelOutputError, words):
        _predict(model)


def test_model_errors_propagate_with_a_note_on_the_batch():
    def broken(x):
        raise RuntimeError("CUDA out of memory (pretend)")

    with pytest.raises(RuntimeError, match="out of memory") as info:
        _predict(broken)
    assert any(
        "batch of shape (3, 3, 16, 16)" in note for note in getattr(info.value, "__notes__", [])
    )


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"activation": "relu"}, "activation must be one of"),
        ({"normalize": (0, 0)}, "std must be > 0"),
        ({"normalize": "imagenet"}, "normalize must be (mean, std)"),
    ],
)
def test_bad_runner_options(config, words):
    with pytest.raises(OptionError) as info:
        RunnerConfig(**config)
    assert words in str(info.value)


def test_pickled_string_spec_runner_reloads_its_model_instead_of_carrying_it():
    runner = ModelRunner("seamless_dask.testing:make_conv")
    runner.predict(TILES)
    clone = pickle.loads(pickle.dumps(runner))
    assert clone._model is None
    np.testing.assert_allclose(clone.predict(TILES), runner.predict(TILES))


def test_probe_counts_output_channels():
    assert ModelRunner(helpers.conv_net(classes=6)).probe(3, (8, 8)) == 6


def test_amp_is_checked_and_harmless_on_cpu():
    with helpers.raises_mentioning(OptionError, ["amp", "'fp8'", "bf16"]):
        RunnerConfig(amp="fp8")
    tiles = helpers.structured_image(3, 16, 16)[None].astype(np.float32)
    net = helpers.conv_net(bands=3, classes=2)
    plain = ModelRunner(net, RunnerConfig(device="cpu")).predict(tiles)
    np.testing.assert_array_equal(
        ModelRunner(net, RunnerConfig(device="cpu", amp="bf16")).predict(tiles), plain
    )


@pytest.mark.gpu
def test_amp_on_cuda_stays_close_to_float32():
    tiles = helpers.structured_image(3, 64, 64)[None].astype(np.float32) / 255
    net = helpers.conv_net(bands=3, classes=2)
    plain = ModelRunner(net, RunnerConfig(device="cuda")).predict(tiles)
    half = ModelRunner(net, RunnerConfig(device="cuda", amp="bf16")).predict(tiles)
    np.testing.assert_allclose(half, plain, atol=2e-2)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_predict_stream_gives_each_batch_its_own_predictions_in_order(device):
    rng = np.random.default_rng(3)
    batches = [rng.random((n, 3, 16, 16), dtype=np.float32) for n in (4, 4, 1)]
    runner = ModelRunner(helpers.conv_net(bands=3, classes=2), RunnerConfig(device=device))
    streamed = list(runner.predict_stream(iter(batches)))
    assert [p.shape[0] for p in streamed] == [4, 4, 1]
    for tiles, got in zip(batches, streamed, strict=True):
        np.testing.assert_allclose(got, runner.predict(tiles), rtol=1e-5, atol=1e-6)
    assert list(runner.predict_stream(iter([]))) == []


def test_predict_stream_keeps_at_most_one_batch_in_flight():
    pulled = []

    def batches():
        for i in range(3):
            pulled.append(i)
            yield np.zeros((1, 3, 8, 8), np.float32)

    stream = ModelRunner(helpers.conv_net(bands=3, classes=2)).predict_stream(batches())
    next(stream)
    assert pulled == [0, 1]  # batch 1 was queued before batch 0 came back, batch 2 not yet
