"""The evaluation engine (attacks.evaluate.score_dataset): one-logit detectors read as (0, z),
models scored in eval mode and restored exactly, transforms see global batch indices, kept
samples and extras come back in dataset order, and the callers' numbers are those of the
per-batch loops it replaced."""

from __future__ import annotations

import torch
from torch import nn

from deepshield.attacks import pgd
from deepshield.attacks.evaluate import score_dataset
from deepshield.attacks.registry import get_attack
from deepshield.data import TensorSet
from deepshield.defenses.adversarial_detector import adversarial_pairs
from deepshield.defenses.robustness import craft


def _net(out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, out))


def _data(n: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 2, 2, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_one_logit_detector_scores_as_sigmoid():
    model, (x, y) = _net(1), _data()
    got = score_dataset(model, x, y, batch_size=4)
    z = model.eval()(x).reshape(-1).detach()
    torch.testing.assert_close(got.logits["model"], torch.stack([torch.zeros_like(z), z], 1))
    torch.testing.assert_close(got.scores(), torch.sigmoid(z))


def test_models_scored_in_eval_mode_and_restored_exactly():
    model, (x, y) = _net(), _data()
    model.train()
    model[2].eval()  # mixed modes: only the dropout in eval
    flags = [p.requires_grad for p in model.parameters()]
    got = score_dataset({"a": model}, x, y, batch_size=3)
    assert [m.training for m in model] == [True, True, False, True]
    assert [p.requires_grad for p in model.parameters()] == flags
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(got.logits["a"], model(x))  # dropout off: deterministic


def test_transform_batches_keep_and_extras_in_dataset_order():
    model, (x, y) = _net(), _data(11)
    seen = []

    def shift(xb, yb, b):
        seen.append((b, len(xb)))
        return (xb + 0.01 * (b + 1)).clamp(0, 1), {"batch": torch.full((len(xb),), b)}

    got = score_dataset(model, x, y, shift, batch_size=4, keep=[1, 9])
    assert seen == [(0, 4), (1, 4), (2, 3)]
    assert got.extras["batch"].tolist() == [0] * 4 + [1] * 4 + [2] * 3
    moved = torch.cat([(x[i : i + 4] + 0.01 * (i // 4 + 1)).clamp(0, 1) for i in (0, 4, 8)])
    torch.testing.assert_close(got.kept, moved[[1, 9]])
    delta = (moved - x).flatten(1)
    torch.testing.assert_close(got.l2, delta.norm(dim=1))
    torch.testing.assert_close(got.linf, delta.abs().amax(dim=1))


def test_craft_equals_the_per_batch_loop_it_replaced():
    model, (x, y) = _net(), _data(11)
    fn = get_attack("pgd")
    loop = torch.cat(
        [fn(model, x[i : i + 4], y[i : i + 4], 0.1, steps=3, seed=7 + i) for i in (0, 4, 8)]
    )
    torch.testing.assert_close(craft(model, x, y, "pgd", 0.1, steps=3, seed=7, batch_size=4), loop)


def test_adversarial_pairs_judge_the_stored_8_bit_images():
    model, (x, y) = _net(), _data(11)
    pairs = adversarial_pairs(model, TensorSet(x, y, [str(i) for i in range(11)]), "pgd", 0.2)
    adv = pgd(model, x, y, 0.2, steps=10, seed=0)
    stored = (adv * 255).round().to(torch.uint8)
    assert torch.equal(pairs.x[11:], stored)
    with torch.no_grad():
        wrong = model.eval()(stored.float() / 255).argmax(1) != y
    assert torch.equal(pairs.meta["fooled"][11:], wrong)
