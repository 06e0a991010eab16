"""Host reads on the hot paths, checked on the CPU (issue 21: attacks and DIP without a host
synchronisation per step).

On a GPU every read of a tensor's value by the host (`.item()`, `bool(t)`, `.tolist()`, a
boolean mask, `nonzero`) waits for the device. Two CPU stand-ins catch them without a GPU:

- `HostReads` counts the explicit reads (a `TorchFunctionMode` sees `Tensor.item`,
  `Tensor.__bool__`, `Tensor.tolist`, ...): a public attack makes a fixed number per call,
  whatever its step count, and DIP one per `check_every` iterations.
- torch's `FakeTensorMode` runs a function on tensors without data and raises on every op
  whose result depends on the data (reads, boolean masks, `nonzero`): the attack loop runs
  through it, so it has none.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.overrides import TorchFunctionMode

from deepshield.attacks import (
    APGDStep,
    Budget,
    SteepestStep,
    apgd,
    apgd_targeted,
    attack_loop,
    classification_loss,
    fgsm,
    ifgsm,
    misclassified,
    pgd,
)
from deepshield.defenses.dip import DipConfig, dip_reconstruct

READS = {
    Tensor.item,
    Tensor.__bool__,
    Tensor.tolist,
    Tensor.cpu,
    Tensor.numpy,
    Tensor.__int__,
    Tensor.__float__,
    Tensor.__index__,
}


class HostReads(TorchFunctionMode):
    """Counts the host reads of tensor values made inside the `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.count: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.count[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def small_cnn() -> nn.Module:
    """[B,3,16,16] -> logits [B,10]."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 16, 10),
    ).eval()


def reads(fn) -> int:
    with HostReads() as mode:
        fn()
    return sum(mode.count.values())


ATTACKS = {
    "pgd": lambda m, x, y, s: pgd(m, x, y, 8 / 255, steps=s, random_start=True, restarts=2),
    "pgd-l2-eot": lambda m, x, y, s: pgd(m, x, y, 0.5, norm="l2", steps=s, eot_samples=2),
    "ifgsm": lambda m, x, y, s: ifgsm(m, x, y, 8 / 255, steps=s),
    "apgd": lambda m, x, y, s: apgd(m, x, y, 8 / 255, steps=s),
    "apgd-targeted": lambda m, x, y, s: apgd_targeted(m, x, y, 8 / 255, steps=s),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_an_attack_reads_values_back_a_fixed_few_times_per_call_whatever_its_steps(name):
    """The input checks read x's and y's ranges once each; no read per step or per restart."""
    model, x = small_cnn(), torch.rand(6, 3, 16, 16)
    y = torch.randint(0, 10, (6,))
    attack = ATTACKS[name]
    few, many = reads(lambda: attack(model, x, y, 4)), reads(lambda: attack(model, x, y, 24))
    assert few == many <= 2, (few, many)


def test_fgsm_reads_values_back_at_most_twice():
    model, x = small_cnn(), torch.rand(6, 3, 16, 16)
    assert reads(lambda: fgsm(model, x, torch.randint(0, 10, (6,)), 8 / 255)) <= 2


@pytest.mark.parametrize(
    "norm, step, eot, masked",
    [
        ("linf", "steepest", 1, False),
        ("l2", "steepest", 2, True),
        ("linf", "apgd", 1, False),
        ("l2", "apgd", 1, True),
    ],
)
def test_the_attack_loop_has_no_op_that_depends_on_the_data(norm, step, eot, masked):
    """Under FakeTensorMode (no data) every step, restart, best-iterate update and projection
    runs: nothing in the loop waits for a value (a read, a boolean mask, nonzero)."""
    eps = 8 / 255 if norm == "linf" else 0.5
    with FakeTensorMode():
        model, x = small_cnn(), torch.rand(4, 3, 16, 16)
        y = torch.randint(0, 10, (4,))
        mask = torch.ones(4, 1, 16, 16) if masked else None
        rule = SteepestStep(norm, eps / 4) if step == "steepest" else APGDStep(norm, eps, 12)
        out = attack_loop(
            model,
            x,
            y,
            budget=Budget(norm, eps),
            step=rule,
            steps=12,
            objective=classification_loss,
            success=misclassified,
            mask=mask,
            random_start=True,
            restarts=2,
            eot_samples=eot,
        )
    assert out.shape == x.shape


class ReadingStep(SteepestStep):
    """A step rule that reads a value back each step, as a careless change would."""

    def __call__(self, x_adv: Tensor, grad: Tensor, loss: Tensor) -> Tensor:
        if bool(loss.mean() > 0):
            return super().__call__(x_adv, grad, loss)
        return x_adv


def test_a_read_inside_the_loop_is_caught_by_both_stand_ins():
    """The two checks above can fail: a step that reads back is counted per step and raises
    under FakeTensorMode."""
    model, x = small_cnn(), torch.rand(2, 3, 16, 16)
    y = torch.randint(0, 10, (2,))

    def run(steps: int) -> Tensor:
        return attack_loop(
            model,
            x,
            y,
            budget=Budget("linf", 0.03),
            step=ReadingStep("linf", 0.01),
            steps=steps,
            objective=classification_loss,
        )

    assert reads(lambda: run(8)) - reads(lambda: run(2)) == 6
    with FakeTensorMode(), pytest.raises(DataDependentOutputException):
        model, x, y = small_cnn(), torch.rand(2, 3, 16, 16), torch.randint(0, 10, (2,))
        run(2)


def test_dip_reads_its_stop_flags_once_per_check_interval():
    """CPU twin of the CUDA sync test: 40 iterations read 40 times at check_every=1 and 4 at 10
    (the stop PSNR is never reached, so no read ends the loop early)."""
    x = torch.rand(2, 3, 16, 16)
    cfg = DipConfig(channels=(8, 16), skip=(0, 4), iters=40, stop_psnr=99.0)

    def count(k: int) -> int:
        return reads(lambda: dip_reconstruct(x, cfg, chunk=2, check_every=k))

    assert count(1) - count(10) == 36


@pytest.mark.cuda
@pytest.mark.parametrize("name", ATTACKS)
def test_cuda_attacks_synchronise_a_fixed_few_times_per_call_whatever_their_steps(name):
    """On a GPU, torch's sync debug mode counts the host synchronisations themselves (reads,
    boolean masks, nonzero): as many at 24 steps as at 4, and few."""
    import warnings

    model, x = small_cnn().cuda(), torch.rand(6, 3, 16, 16, device="cuda")
    y = torch.randint(0, 10, (6,), device="cuda")
    attack = ATTACKS[name]

    def syncs(steps: int) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                attack(model, x, y, steps)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    attack(model, x, y, 2)  # warm-up: first-call allocations and kernel selection
    few, many = syncs(4), syncs(24)
    assert few == many <= 4, (few, many)
