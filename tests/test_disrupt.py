"""Generator disruption: budgets and ranges, the paper's update rule, transfer, GANimation parts,
the distortion metrics against hand-computed cases, and the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from deepshield.attacks import Budget, SteepestStep, attack_loop
from deepshield.disrupt import disrupt, distortion, from_pixels, mean_distortion, to_pixels
from deepshield.disrupt.views import Displacement, squared_distance, translate_classes
from deepshield.errors import InputError
from deepshield.models import create
from deepshield.models.architectures.ganimation import mix_attention

EPS = 0.05
TOL = 1e-6  # x + clamp(delta) - x may differ from delta by one float32 ulp


def photos(n: int, size: int = 32) -> torch.Tensor:
    """n crops of scikit-image's bundled photos in the generators' range: [n, 3, s, s] in [-1, 1]."""
    imgs = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    out = []
    for k in range(n):
        a = torch.from_numpy(imgs[k % 3]).permute(2, 0, 1).float() / 255  # [3, H, W]
        a = F.avg_pool2d(a[None], 4)[0]
        top, left = 10 + 7 * k, 20 + 5 * k
        out.append(a[:, top : top + size, left : left + size])
    return from_pixels(torch.stack(out))


def stargan(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("stargan", conv_dim=8, c_dim=5, n_res=1, track_running_stats=False).eval()


def ganimation(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("ganimation", conv_dim=8, c_dim=5, n_res=1).eval()


def one_hot(n: int, k: int = 5) -> torch.Tensor:
    return F.one_hot(torch.arange(n) % k, k).float()


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


# -- budgets, ranges, determinism ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["fgsm", "ifgsm", "pgd"])
def test_every_method_stays_in_the_budget_and_the_generator_range(method: str) -> None:
    g, x = stargan(), photos(4)
    x = torch.cat([x[:2], x[2:].sign()])  # two images saturated at -1 / +1: clipping must hold
    c = one_hot(4)
    x_adv = disrupt(g, x, c, method=method, eps=EPS)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + TOL
    assert x_adv.min() >= -1 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.9 * EPS  # the budget is used, not ignored
    assert all(p.requires_grad for p in g.parameters()) and not g.training  # state restored


def test_same_seed_same_disruption_other_seed_other_start() -> None:
    g, x, c = stargan(), photos(2), one_hot(2)
    a = disrupt(g, x, c, method="pgd", seed=3)
    assert torch.equal(a, disrupt(g, x, c, method="pgd", seed=3))
    assert not torch.equal(a, disrupt(g, x, c, method="pgd", seed=4))
    rng = torch.Generator().manual_seed(3)
    assert torch.equal(a, disrupt(g, x, c, method="pgd", rng=rng))


def test_pixel_range_conversion_round_trips() -> None:
    x01 = torch.rand(2, 3, 8, 8)
    assert torch.allclose(from_pixels(x01), 2 * x01 - 1)
    assert torch.allclose(to_pixels(from_pixels(x01)), x01, atol=1e-7)
    # eps = 0.05 in [-1, 1] is 0.025 in [0, 1] pixels
    assert to_pixels(torch.tensor(0.05)) - to_pixels(torch.tensor(0.0)) == pytest.approx(0.025)


# -- the update rule, against the paper's loop written out ---------------------------------------
def reference_loop(g, x, c, r, x0, eps, alpha, steps, sense):
    """The official LinfPGDAttack.perturb: x <- clip(x_nat + clip(x + a sign(grad), +-eps))."""
    x_adv = x0.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = sense * F.mse_loss(g(x_adv, c), r)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = (x + (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(-1, 1)
    return x_adv


def test_away_from_clean_output_matches_the_official_loop_from_the_jittered_start() -> None:
    g, x, c = stargan(), photos(3), one_hot(3)
    with torch.no_grad():
        r = g(x, c)
    jitter = 1e-3
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(7))
    x0 = (x + (2 * u - 1) * jitter).clamp(-1, 1)  # the core's uniform start in the jitter ball
    expected = reference_loop(g, x, c, r, x0, EPS, 0.01, 10, sense=1.0)
    got = disrupt(g, x, c, method="ifgsm", steps=10, alpha=0.01, seed=7)
    assert torch.allclose(got, expected, atol=1e-6)


def test_x_is_a_stationary_point_of_the_away_objective() -> None:
    g, x, c = stargan(), photos(2), one_hot(2)
    stuck = disrupt(g, x, c, method="ifgsm", jitter=0.0)  # zero gradient at x: no move
    assert torch.equal(stuck, x)
    with torch.no_grad():
        moved = mse(g(disrupt(g, x, c, method="ifgsm"), c), g(x, c))
    assert (moved > 0).all()


def test_fgsm_towards_a_target_is_one_signed_step_down_the_gradient() -> None:
    g, x, c = stargan(), photos(2), one_hot(2)
    target = torch.zeros_like(x)
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mse(g(x_req, c), target).sum(), x_req)
    expected = (x - EPS * grad.sign()).clamp(-1, 1)
    assert torch.allclose(disrupt(g, x, c, method="fgsm", target=target), expected, atol=1e-7)


def test_disruption_moves_the_output_further_than_random_noise_of_the_same_size() -> None:
    g, x, c = stargan(), photos(4), one_hot(4)
    with torch.no_grad():
        clean = g(x, c)
        noise = EPS * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()
        random = mse(g((x + noise).clamp(-1, 1), c), clean)
        results = {
            m: mse(g(disrupt(g, x, c, method=m), c), clean) for m in ("fgsm", "ifgsm", "pgd")
        }
    for m in ("ifgsm", "pgd"):
        assert (results[m] > 3 * random).all(), m
        assert results[m].mean() > results["fgsm"].mean(), m  # iterating beats one step


def test_towards_a_target_gets_closer_than_the_clean_output() -> None:
    g, x, c = stargan(), photos(3), one_hot(3)
    for target in (x, -torch.ones_like(x)):
        x_adv = disrupt(g, x, c, target=target)
        with torch.no_grad():
            assert (mse(g(x_adv, c), target) < mse(g(x, c), target)).all()


def test_unconditional_generators_are_disrupted_too() -> None:
    x = photos(2)
    for name, kw in (("pix2pix", {"ngf": 8, "depth": 5}), ("cyclegan", {"ngf": 8, "n_blocks": 1})):
        torch.manual_seed(0)
        g = create(name, **kw).eval()
        x_adv = disrupt(g, x, method="pgd")
        assert (x_adv - x).abs().max() <= EPS + TOL
        with torch.no_grad():
            assert (mse(g(x_adv), g(x)) > 0).all(), name


# -- class transfer -----------------------------------------------------------------------------
class SpyGenerator(torch.nn.Module):
    """A conditional 'generator' x * (1 + c . w) that records every class batch it sees."""

    bounds = (-1.0, 1.0)
    c_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.2]))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.seen.append(c.detach().clone())
        return torch.tanh(x * (1 + c @ self.w)[:, None, None, None])


def test_iterative_transfer_attacks_one_class_per_step_cycling() -> None:
    g, x = SpyGenerator(), photos(2, size=8)
    disrupt(g, x, transfer="iterative", steps=7)
    per_step = [c for c in g.seen[1:]]  # seen[0]: the clean references, all classes at once
    assert len(g.seen[0]) == 2 * 3
    assert len(per_step) == 7
    for step, c in enumerate(per_step):
        assert torch.equal(c, torch.eye(3)[step % 3].expand(2, -1))


def test_joint_transfer_sums_the_per_class_losses() -> None:
    g, x = stargan(), photos(2)
    classes = torch.eye(5)[[0, 2, 4]]
    chosen = classes[None].expand(2, -1, -1)
    with torch.no_grad():
        refs = translate_classes(g, x, chosen)  # [2, 3, 3, H, W]
        x_moved = (x + 0.03).clamp(-1, 1)
        joint = squared_distance(Displacement(g, chosen, refs)(x_moved))
        by_hand = sum(mse(g(x_moved, classes[k].expand(2, -1)), refs[:, k]) for k in range(3))
    assert torch.allclose(joint, by_hand, rtol=1e-5)
    x_adv = disrupt(g, x, transfer="joint", classes=classes)
    assert (x_adv - x).abs().max() <= EPS + TOL
    with torch.no_grad():
        for k in range(3):
            ck = classes[k].expand(2, -1)
            assert (mse(g(x_adv, ck), g(x, ck)) > 0).all()


def test_core_hooks_on_step_and_start_radius() -> None:
    calls: list[int] = []
    x = torch.zeros(3, 2)

    def flat(out, y):  # zero gradient: the iterate stays at its start
        return out.sum(1) * 0

    x_adv = attack_loop(
        torch.nn.Identity(), x, None, budget=Budget("linf", 0.5), step=SteepestStep("linf", 0.1),
        steps=4, objective=flat, random_start=True, start_radius=0.01, restarts=2, bounds=(-1, 1),
        generator=torch.Generator().manual_seed(0), on_step=calls.append,
    )  # fmt: skip
    assert calls == [0, 1, 2, 3, 0, 1, 2, 3]
    assert 0 < x_adv.abs().max() <= 0.01


# -- GANimation: the attention mix and its parts -------------------------------------------------
def test_ganimation_output_is_the_attention_mix_of_its_parts() -> None:
    g, x, c = ganimation(), photos(2), one_hot(2)
    with torch.no_grad():
        att, color = g.forward_parts(x, c)
        refs = translate_classes(g, x, c[:, None])[:, 0]
        assert torch.allclose(refs, mix_attention(att, color, x))
        assert torch.allclose(translate_classes(g, x, c[:, None], "attention")[:, 0], att)
        assert torch.allclose(translate_classes(g, x, c[:, None], "color")[:, 0], color)


def test_ganimation_attention_attack_towards_one_returns_the_input() -> None:
    g, x, c = ganimation(), photos(3), one_hot(3)
    x_adv = disrupt(g, x, c, part="attention", target=1.0, steps=20)
    assert (x_adv - x).abs().max() <= EPS + TOL
    with torch.no_grad():
        att_clean, _ = g.forward_parts(x, c)
        att_adv, _ = g.forward_parts(x_adv, c)
        assert (att_adv.flatten(1).mean(1) > att_clean.flatten(1).mean(1)).all()
        # y = (1 - A) C + A x_adv: a larger attention keeps more of the (perturbed) input
        assert (mse(g(x_adv, c), x_adv) < mse(g(x, c), x)).all()


def test_ganimation_output_and_colour_attacks() -> None:
    g, x, c = ganimation(), photos(2), one_hot(2)
    with torch.no_grad():
        clean, (_, color) = g(x, c), g.forward_parts(x, c)
        away = g(disrupt(g, x, c, method="pgd"), c)
        _, color_adv = g.forward_parts(disrupt(g, x, c, part="color"), c)
    assert (mse(away, clean) > 0).all()
    assert (mse(color_adv, color) > 0).all()


# -- metrics: hand-computed cases ---------------------------------------------------------------
def test_distortion_hand_computed() -> None:
    y = torch.zeros(3, 1, 2, 2)
    y_adv = torch.stack(
        [
            torch.full((1, 2, 2), 0.5),  # l1 0.5, l2 0.25
            torch.tensor([[[0.25, -0.25], [0.25, -0.25]]]),  # l1 0.25, l2 0.0625 (on the threshold)
            torch.tensor([[[0.2, 0.0], [0.0, 0.0]]]),  # l1 0.05, l2 0.01
        ]
    )
    d = distortion(y_adv, y, threshold=0.0625)
    assert torch.allclose(d["l1"], torch.tensor([0.5, 0.25, 0.05], dtype=torch.float64))
    assert torch.allclose(d["l2"], torch.tensor([0.25, 0.0625, 0.01], dtype=torch.float64))
    assert d["disrupted"].tolist() == [True, True, False]  # >= threshold counts
    assert distortion(y_adv, y)["disrupted"].tolist() == [True, True, False]  # default 0.05
    m = mean_distortion(d)
    assert m["l1"] == pytest.approx(0.8 / 3) and m["l2"] == pytest.approx(0.3225 / 3)
    assert m["disrupted"] == pytest.approx(2 / 3) and m["n"] == 3
    assert distortion(y, y)["l2"].sum() == 0


def test_distortion_refuses_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="differ"):
        distortion(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


# -- errors ------------------------------------------------------------------------------------
def test_bad_arguments_raise_one_line_input_errors() -> None:
    g, x, c = stargan(), photos(2), one_hot(2)
    cases = [
        (dict(method="cw"), "method"),
        (dict(part="attention"), "GANimation"),
        (dict(eps=-0.1), "eps"),
        (dict(transfer="both"), "transfer"),
        (dict(target=torch.zeros(2, 3, 5, 5)), "target"),
    ]
    for kw, match in cases:
        with pytest.raises(InputError, match=match):
            disrupt(g, x, c, **kw)
    with pytest.raises(InputError, match="conditional"):
        disrupt(g, x)
    with pytest.raises(InputError, match="classes="):
        disrupt(g, x, c, transfer="joint")
    with pytest.raises(InputError, match=r"\[2, 5\]"):
        disrupt(g, x, torch.zeros(2, 3))
    with pytest.raises(InputError, match="outside"):
        disrupt(g, x * 3, c)
    torch.manual_seed(0)
    with pytest.raises(InputError, match="unconditional"):
        disrupt(create("pix2pix", ngf=8, depth=5), x, c)
