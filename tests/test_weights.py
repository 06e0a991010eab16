"""Weight files: strict loading of safetensors / weights-only .pth, key fitting, clear refusals."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import shared_path
from deepshield.errors import ModelError
from deepshield.models import create, load_weights, save_weights
from deepshield.models.registry import IMAGENET_MEAN, IMAGENET_STD


def _resnet18_fixture() -> tuple[str, dict[str, torch.Tensor]]:
    weights = shared_path("reference", "models", "resnet18.safetensors")
    io = load_file(str(shared_path("reference", "models", "resnet18.io.safetensors")))
    return str(weights), io


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> bool:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_bare_torchvision_file_loads_into_normalized_model():
    path, io = _resnet18_fixture()
    model = load_weights(create("resnet18", num_classes=1000), path).eval()
    assert next(iter(model.state_dict())).startswith("net.")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = io["input"] * std + mean  # the fixture input is already normalised
    with torch.no_grad():
        out = model(pixels)
    torch.testing.assert_close(out, io["output"], atol=1e-4, rtol=1e-4)
    sd = load_file(path)  # fp16 on disk, exact after the cast to the model's float32
    assert sd["conv1.weight"].dtype == torch.float16
    assert model.net.conv1.weight.dtype == torch.float32
    assert torch.equal(model.net.conv1.weight, sd["conv1.weight"].float())


def test_safetensors_round_trip_and_normalized_file_into_bare_model(tmp_path):
    torch.manual_seed(0)
    src = create("simplenet")
    path = save_weights(src, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    dst = create("simplenet")
    assert not _same_outputs(src, dst)
    load_weights(dst, path)
    assert _same_outputs(src, dst)
    bare = load_weights(create("simplenet", normalize=False), path)  # `net.` keys stripped
    assert _same_outputs(src.net, bare)


def test_reads_pth_written_by_torch_save(tmp_path):
    torch.manual_seed(0)
    src = create("simplenet", normalize=False)
    torch.save(src.state_dict(), tmp_path / "plain.pth")
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("plain.pth", "wrapped.pth"):
        torch.manual_seed(1)
        dst = create("simplenet")  # bare keys into a Normalized model
        load_weights(dst, tmp_path / name)
        assert _same_outputs(src, dst.net)


def test_refuses_pickle_with_a_non_tensor_object(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": ModelError("not a tensor")}, path)
    with pytest.raises(ModelError, match="cannot read weights") as err:
        load_weights(create("simplenet"), path)
    msg = str(err.value)
    assert str(path) in msg and "ModelError" in msg and "\n" not in msg  # names the global


def test_refuses_weights_only_dict_holding_non_tensors(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "note": "hello"}, path)
    with pytest.raises(ModelError, match="not a state dict of tensors"):
        load_weights(create("simplenet"), path)


def test_wrong_num_classes_lists_mismatched_keys_in_one_line():
    path, _ = _resnet18_fixture()
    with pytest.raises(ModelError) as err:
        load_weights(create("resnet18", num_classes=2), path)
    msg = str(err.value)
    assert "\n" not in msg and path in msg
    assert "2 shape mismatches" in msg
    assert "net.fc.weight: file (1000, 512) vs model (2, 512)" in msg
    assert "num_classes" in msg  # the fix


def test_missing_keys_fail_strict_even_num_batches_tracked(tmp_path):
    torch.manual_seed(0)
    src = create("simplenet", normalize=False)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ModelError, match="4 missing"):
        load_weights(create("simplenet"), tmp_path / "w.pth")
    load_weights(create("simplenet"), tmp_path / "w.pth", strict=False)


def test_shape_mismatch_fails_even_when_not_strict(tmp_path):
    save_weights(create("simplenet", num_classes=3), tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="shape mismatches"):
        load_weights(create("simplenet"), tmp_path / "w.safetensors", strict=False)


def test_missing_or_corrupt_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_weights(create("simplenet"), tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_weights(create("simplenet"), bad)
