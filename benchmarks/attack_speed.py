"""PGD-10 speed: deepshield vs ART, torchattacks and a plain PyTorch loop, in one run.

    PYTHONPATH=src python benchmarks/attack_speed.py [--batch 256] [--repeats 3] [--device cpu]
        [--only "plain loop,deepshield,deepshield sweep x3"]

L-inf PGD, eps 8/255, alpha 2/255, 10 steps, on a batch of CIFAR-shaped images against a small
CNN and ResNet-18 (CIFAR stem). "deepshield sweep x3" is `attack_sweep` over the budgets 2/255,
4/255 and 8/255 (three PGD-10 runs, logits of every point, nested budgets where the code has
them). Implementations run round-robin, `repeats` times each after one warm-up; the table gives
the fastest time and the ratio to the plain loop. The script runs against older deepshield code
too (PYTHONPATH=<other checkout>/src), which is how the cost of a change is measured.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield.attacks import pgd
from deepshield.attacks.sweep import AttackSpec, attack_sweep

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
SWEEP_EPS = (2 / 255, 4 / 255, 8 / 255)


def plain_pgd(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The reference: PGD in ten lines of plain PyTorch."""
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + ALPHA * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-EPS, EPS)).clamp(0, 1)
    return x_adv


def small_cnn() -> nn.Module:
    """Three stride-2 convs and a linear layer (~30 k parameters): [B,3,32,32] -> [B,10]."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 16, 10),
    )


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def local_resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem, no max-pool (used when deepshield.models lacks it)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def resnet18_cifar() -> nn.Module:
    from deepshield.errors import ConfigError
    from deepshield.models import create

    try:
        return create("resnet18_cifar", num_classes=10)
    except ConfigError:
        print("deepshield.models has no resnet18_cifar here: using the benchmark's own ResNet-18")
        return local_resnet18_cifar()


def implementations(model: nn.Module, device: str) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """name -> attack(x, y); peers that cannot be imported are left out with a message."""
    impls: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "plain loop": lambda x, y: plain_pgd(model, x, y),
        "deepshield": lambda x, y: pgd(model, x, y, EPS, alpha=ALPHA, steps=STEPS, seed=0),
        "deepshield sweep x3": lambda x, y: attack_sweep(
            model, x, y, AttackSpec("pgd", SWEEP_EPS, steps=STEPS), batch_size=len(x)
        ),
    }
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        impls["torchattacks"] = ta
    except Exception as e:
        print(f"torchattacks left out: {type(e).__name__}: {e}")
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
            clip_values=(0.0, 1.0), device_type="gpu" if device.startswith("cuda") else "cpu",
        )  # fmt: skip

        def art(x: Tensor, y: Tensor) -> Tensor:
            attack = ProjectedGradientDescent(
                clf, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=STEPS,
                num_random_init=1, batch_size=len(x), verbose=False,
            )  # fmt: skip
            return torch.from_numpy(attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy()))

        impls["ART"] = art
    except Exception as e:
        print(f"ART left out: {type(e).__name__}: {e}")
    return impls


def timed(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x, y)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(
    name: str, model: nn.Module, x: Tensor, y: Tensor, repeats: int, only: str | None
) -> None:
    model = model.to(x.device).eval()
    impls = implementations(model, str(x.device))
    if only:
        impls = {k: fn for k, fn in impls.items() if k in only.split(",") or k == "plain loop"}
    for fn in impls.values():  # warm-up on a few images
        fn(x[:8], y[:8])
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(repeats):
        for k, fn in impls.items():
            times[k].append(timed(fn, x, y))
    base = min(times["plain loop"])
    print(f"\n{name}: PGD-{STEPS}, batch {len(x)}, {x.device}, {torch.get_num_threads()} threads")
    print(f"{'implementation':<14} {'best s':>8} {'all runs s':>32} {'vs plain':>9}")
    for k, ts in times.items():
        runs = " ".join(f"{t:.2f}" for t in ts)
        print(f"{k:<14} {min(ts):>8.2f} {runs:>32} {min(ts) / base:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="small_cnn,resnet18_cifar")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", default=None, help="comma-separated implementations to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    builders = {"small_cnn": small_cnn, "resnet18_cifar": resnet18_cifar}
    for name in args.models.split(","):
        torch.manual_seed(0)
        bench(name, builders[name](), x, y, args.repeats, args.only)


if __name__ == "__main__":
    main()
