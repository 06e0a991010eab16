"""Image architectures: key/shape/numeric fidelity to torchvision and timm, and the model contract.

The fidelity references are ../shared/reference/models (random seeded weights and the outputs
torchvision / timm computed with them; see its README for the procedure and tolerances).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import shared_path
from deepshield.errors import ModelError
from deepshield.models import Normalized, create, load_weights, names, param_count, spec

# (fixture name, deepshield name)
FIXTURES = [
    ("resnet18", "resnet18"),
    ("shufflenet_v2_x1_0", "shufflenet_v2_x1_0"),
    ("legacy_xception", "xception"),
]


@pytest.fixture(scope="module")
def schemas() -> dict:
    return json.loads(shared_path("reference", "models", "schemas.json").read_text())


def _fixture(ref: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(weights path, io tensors) of a reference model."""
    weights = shared_path("reference", "models", f"{ref}.safetensors")
    io = load_file(str(shared_path("reference", "models", f"{ref}.io.safetensors")))
    return str(weights), io


def _schema(model: nn.Module) -> list[list]:
    return [
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in model.state_dict().items()
    ]


def _fc_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tensor the model's last Linear receives during forward(x)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    handle = last.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(("ref", "name"), FIXTURES)
def test_state_dict_schema_and_param_count_equal_reference(schemas, ref, name):
    model = create(name, num_classes=1000, normalize=False)
    assert _schema(model) == schemas[ref]["state_dict"]  # keys, shapes, dtypes, in order
    assert param_count(model) == schemas[ref]["param_count"]


@pytest.mark.parametrize(("ref", "name"), FIXTURES)
def test_outputs_equal_reference_library(ref, name):
    path, io = _fixture(ref)
    model = load_weights(create(name, num_classes=1000, normalize=False), path).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 file cast up
    with torch.no_grad():
        out = model(io["input"])
        feats = model.forward_features(io["input"])
        fc_in = _fc_input(model, io["input"])
    assert out.shape == io["output"].shape
    torch.testing.assert_close(out, io["output"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats, io["pre_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fc_in, feats, atol=0, rtol=0)


def test_vgg11_bn_schema_and_param_count_equal_torchvision(schemas):
    model = create("vgg11_bn", num_classes=1000, normalize=False)
    assert _schema(model) == schemas["vgg11_bn"]["state_dict"]
    assert param_count(model) == schemas["vgg11_bn"]["param_count"] == 132_868_840
    pool = model.avgpool
    assert isinstance(pool, nn.AdaptiveAvgPool2d) and tuple(pool.output_size) == (7, 7)


def test_vgg11_bn_small_keeps_the_layer_pattern_at_quarter_width(schemas):
    big = schemas["vgg11_bn"]
    small = create("vgg11_bn_small", num_classes=2, normalize=False)
    assert list(small.state_dict()) == [k for k, _, _ in big["state_dict"]]  # same indices
    big_features = [(name, kind, hp) for name, kind, hp in big["layers"] if "features" in name]
    kinds = [type(m).__name__ for m in small.features]
    assert kinds == [kind for _, kind, _ in big_features]
    assert kinds.count("Conv2d") == 8 and kinds.count("MaxPool2d") == 5
    small_convs = [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)]
    big_convs = [hp["out"] for _, kind, hp in big_features if kind == "Conv2d"]
    assert [4 * c for c in small_convs] == big_convs
    assert [m.out_features for m in small.classifier if isinstance(m, nn.Linear)] == [256, 256, 2]


def test_two_class_and_detector_param_counts_equal_reference_facts(schemas):
    facts = schemas["facts"]
    assert param_count(create("resnet18")) == facts["torchvision.resnet18(num_classes=2)"]
    assert (
        param_count(create("shufflenet_v2_x1_0"))
        == facts["torchvision.shufflenet_v2_x1_0(num_classes=2)"]
    )
    assert param_count(create("xception")) == facts["timm legacy_xception(num_classes=2)"]
    detector = create("xception_detector", normalize=False)
    head = "head Linear(1000,256)-ReLU-Linear(256,64)-ReLU-Linear(64,2)"
    assert param_count(detector.head) == facts[head] == 272_834
    assert param_count(detector) == facts[f"timm legacy_xception(num_classes=1000) + {head}"]
    assert param_count(detector) == 23_128_786


def test_resnet18_cifar_has_resnet18_keys_and_a_stride1_stem():
    imagenet = create("resnet18", normalize=False)
    cifar = create("resnet18_cifar", normalize=False)
    a, b = imagenet.state_dict(), cifar.state_dict()
    assert list(a) == list(b)
    assert [k for k in a if a[k].shape != b[k].shape] == ["conv1.weight"]
    assert tuple(b["conv1.weight"].shape) == (64, 3, 3, 3)
    grid = []
    cifar.layer4.register_forward_hook(lambda m, i, o: grid.append(o.shape[-2:]))
    cifar.eval()(torch.rand(1, 3, 32, 32))
    assert tuple(grid[0]) == (4, 4)  # 32 / 8: no stem down-sampling


def test_xception_loads_cadene_style_checkpoint_through_its_remap(tmp_path):
    path, io = _fixture("legacy_xception")
    sd = load_file(path)
    cadene = {}
    for k, v in sd.items():  # 2-d pointwise matrices and a `last_linear` classifier
        v = v[:, :, 0, 0] if k.endswith("pointwise.weight") else v
        cadene[k.replace("fc.", "last_linear.") if k.startswith("fc.") else k] = v.contiguous()
    save_file(cadene, str(tmp_path / "cadene.safetensors"))
    model = load_weights(create("xception", num_classes=1000), tmp_path / "cadene.safetensors")
    with torch.no_grad():
        out = model.net.eval()(io["input"])
    torch.testing.assert_close(out, io["output"], atol=1e-5, rtol=1e-4)


def test_xception_detector_backbone_loads_a_bare_legacy_xception_file():
    path, io = _fixture("legacy_xception")
    detector = create("xception_detector")
    with pytest.raises(ModelError, match=r"load_weights\(model\.net\.backbone, path\)") as err:
        load_weights(detector, path)
    assert path in str(err.value) and "\n" not in str(err.value)
    load_weights(detector.net.backbone, path)
    detector.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            detector.net.backbone(io["input"]), io["output"], atol=1e-5, rtol=1e-4
        )
        logits = detector.net(io["input"])
    assert logits.shape == (2, 2)


def test_create_wraps_in_normalized_and_normalises_inside():
    torch.manual_seed(0)
    model = create("simplenet").eval()
    assert isinstance(model, Normalized)
    assert list(model.state_dict()) == ["net." + k for k in model.net.state_dict()]
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / 0.5))
        torch.testing.assert_close(model.forward_features(x), model.net.forward_features(2 * x - 1))
    resnet = create("resnet18", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125)).eval()
    x = torch.rand(1, 3, 32, 32)
    z = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 0.125]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(resnet(x), resnet.net(z))
    assert resnet.deepshield_spec["kwargs"]["std"] == [0.5, 0.25, 0.125]
    assert not isinstance(create("simplenet", normalize=False), Normalized)


def test_registered_statistics_are_the_libraries_preprocessing(schemas):
    facts = schemas["facts"]
    xcfg = facts["timm legacy_xception pretrained_cfg (preprocessing)"]
    assert spec("xception").mean == tuple(xcfg["mean"]) and spec("xception").std == tuple(
        xcfg["std"]
    )
    rcfg = facts["torchvision ResNet18_Weights.IMAGENET1K_V1 preprocessing"]
    assert spec("resnet18").mean == tuple(rcfg["mean"]) and spec("resnet18").std == tuple(
        rcfg["std"]
    )


IMAGE_MODELS = names(kind="image")


def test_every_architecture_of_the_brief_is_registered():
    wanted = {
        "mlp3",
        "simplenet",
        "vgg11_bn",
        "vgg11_bn_small",
        "resnet18",
        "resnet18_cifar",
        "shufflenet_v2_x1_0",
        "xception",
        "xception_detector",
    }
    assert wanted <= set(IMAGE_MODELS)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_model_contract(name):
    """Logits shape, gradient to the pixels, forward_features = fc input, cam_layer resolves."""
    torch.manual_seed(0)
    num_classes = 3
    model = create(name, num_classes=num_classes)
    x = torch.rand(2, *spec(name).input_size, requires_grad=True)

    model.train()  # BN in training mode: needs B >= 2
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()

    model.eval()
    cam = model.cam_layer
    maps = []
    if cam is not None:
        layer = model.get_submodule(cam)
        layer.register_forward_hook(lambda m, i, o: maps.append(o))
    logits = model(x)
    assert logits.shape == (2, num_classes) and torch.isfinite(logits).all()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features)
        torch.testing.assert_close(_fc_input(model, x), feats)
    if cam is None:
        assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    else:
        fmap = maps[0]
        assert fmap.dim() == 4 and fmap.shape[0] == 2 and fmap.shape[-1] >= 1
        grad = torch.autograd.grad(logits[:, 0].sum(), fmap)[0]  # what Grad-CAM needs
        assert grad.shape == fmap.shape and grad.abs().sum() > 0


def test_mlp3_input_size_sets_in_features():
    model = create("mlp3", input_size=(3, 64, 64), normalize=False)
    assert model.fc1.in_features == 3 * 64 * 64
    assert model(torch.rand(4, 3, 64, 64)).shape == (4, 2)
    assert create("mlp3", normalize=False).fc1.in_features == 3 * 32 * 32
    assert create("mlp3").cam_layer is None


@pytest.mark.parametrize("size", [32, 48, 128])
def test_simplenet_runs_at_any_size_from_32_px(size):
    model = create("simplenet").eval()
    assert model(torch.rand(2, 3, size, size)).shape == (2, 2)
    assert 50_000 <= param_count(model) <= 300_000


def test_unknown_architecture_argument_is_a_config_error():
    from deepshield.errors import ConfigError

    with pytest.raises(ConfigError, match="resnet18"):
        create("resnet18", widths=(1, 2))
    with pytest.raises(ConfigError, match="did you mean"):
        create("resnet19")
