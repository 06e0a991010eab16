"""DIP purification: the slow per-image configuration vs the fast batched one, in one run.

    PYTHONPATH=src python benchmarks/dip_speed.py --run RUN_DIR [--n 16] [--eps 0.02]
        [--threads 2] [--slow-iters 1500] [--fast-iters N] [--fast-preset fast[,balanced,paper]]
        [--chunk 16[,64]] [--device cpu|cuda] [--shared] [--json out.json]

RUN_DIR is a real/fake image detector run (`deepshield train`, 64x64 images). n fakes (with
their white-box FGSM versions) and n reals of its test split go through Gandhi & Jain's table
(`defenses.purifier.purification_table`) twice, with the same images and seeds:
- slow: per image, the paper's network and settings (`dip.PAPER`), a fixed number of iterations;
- fast: `chunk` images at once as one grouped model (`dip.FAST`), early stopping per image
  (one fast configuration per value of `--chunk 16,64`, each compared with the slow one);
  `--fast-preset paper` runs the paper's network and running average grouped instead, for
  `--fast-iters` iterations (e.g. 400); `balanced` runs FAST's network 750 iterations without
  early stop; a comma-separated list (`fast,balanced`) compares each with the slow one.
It prints time per image (wall and CPU seconds; on a busy machine CPU seconds are the better
measure), the recall table of both, the speed-up and the recall ratio fast / slow.
--device cuda runs the detector and the purification on the GPU (wall seconds are then the
measure: CPU seconds count only the host's work).
--shared adds the shared-network batch mode for comparison.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import torch

from deepshield.defenses.dip import FAST, PAPER, PRESETS
from deepshield.defenses.purifier import DipPurifier, purification_table, timing
from deepshield.runs.purify import purification_inputs


def share(value: float | None) -> str:
    """A share to 3 decimals, or "-" where its group is empty (None)."""
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="detector run folder (64x64 real/fake images)")
    ap.add_argument("--n", type=int, default=16, help="fakes and reals drawn from the test split")
    ap.add_argument("--eps", type=float, default=0.02, help="FGSM budget of the perturbed fakes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slow-iters", type=int, default=PAPER.iters)
    ap.add_argument(
        "--fast-iters", type=int, default=None, help="iterations (a cap where the preset stops "
        "early) [the preset's: fast 500, balanced 750, paper 1500]",
    )  # fmt: skip
    ap.add_argument(
        "--fast-preset",
        default="fast",
        help="presets of the fast configurations, comma-separated: fast (FAST: early stop), "
        "balanced (FAST's network, 750 iterations, no stop) or paper (PAPER's network grouped)",
    )
    ap.add_argument("--chunk", default="16", help="images per grouped model, e.g. 16 or 16,64")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--shared", action="store_true", help="also measure the shared network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all numbers to this file")
    args = ap.parse_args()
    presets = args.fast_preset.split(",")
    for preset in presets:
        if preset not in PRESETS:
            ap.error(f"--fast-preset {preset!r}: use {', '.join(PRESETS)}")
    torch.set_num_threads(args.threads)

    inputs = purification_inputs(args.run, eps=args.eps, n=args.n, seed=args.seed)
    dev = torch.device(args.device)
    detector = inputs.detector.to(dev)
    fakes, fakes_adv, reals = (t.to(dev) for t in (inputs.fakes, inputs.fakes_adv, inputs.reals))
    chunks = [int(c) for c in args.chunk.split(",")]
    configs = {
        "slow (per-image, paper)": DipPurifier(
            replace(PAPER, iters=args.slow_iters), mode="per-image", seed=args.seed
        ),
    }
    for preset in presets:
        cfg = PRESETS[preset]
        cfg = replace(cfg, iters=args.fast_iters) if args.fast_iters else cfg
        label = {
            "fast": "fast (grouped, early stop)",
            "balanced": f"balanced (grouped, {cfg.iters} it., no stop)",
            "paper": f"fast (grouped, paper net, {cfg.iters} it.)",
        }[preset]
        for chunk in chunks:
            name = label if len(chunks) == 1 else f"{label}, chunk {chunk}"
            configs[name] = DipPurifier(cfg, mode="grouped", chunk=chunk, seed=args.seed)
    if args.shared:
        configs["shared network, early stop"] = DipPurifier(
            replace(FAST, iters=args.fast_iters or FAST.iters),
            mode="shared",
            chunk=chunks[0],
            seed=args.seed,
        )
    results = {}
    for name, purifier in configs.items():
        table = purification_table(detector, purifier, fakes, fakes_adv, reals, blur_baseline=False)
        images = table.pop("images")
        table.update(timing(purifier.last, len(images["input"])), dip=asdict(purifier.cfg))
        results[name] = table
        print(f"{name}: {table['counts']}, {table['seconds_per_image']:.2f} s/image "
              f"({table['cpu_seconds_per_image']:.2f} CPU-s), {table['mean_iters']:.0f} iterations, "
              f"PSNR to input {table['mean_psnr_to_input']:.1f} dB", flush=True)  # fmt: skip

    print(f"\n{inputs.dataset}, FGSM eps={args.eps:g} (white-box), {args.threads} threads, {dev}")
    head = f"{'configuration':30} {'t':>5} {'defence':>9} {'perturbed':>10} {'unperturbed':>12} {'reals kept':>11}"
    print(head)
    for name, table in results.items():
        for r in table["rows"]:
            if r["defence"] == "none" and name != next(iter(results)):
                continue
            label = "detector alone" if r["defence"] == "none" else name
            shares = [
                share(r[k]) for k in ("recall_perturbed", "recall_unperturbed", "real_retained")
            ]
            print(f"{label:30} {r['threshold']:>5g} {r['defence']:>9} "
                  f"{shares[0]:>10} {shares[1]:>12} {shares[2]:>11}")  # fmt: skip
    slow = results["slow (per-image, paper)"]
    for name in list(configs)[1 : 1 + len(chunks) * len(presets)]:
        fast = results[name]
        speedup = slow["cpu_seconds_per_image"] / fast["cpu_seconds_per_image"]
        wall = slow["seconds_per_image"] / fast["seconds_per_image"]
        print(f"\n{name}: speed-up vs slow {speedup:.1f}x in CPU seconds ({wall:.1f}x wall)")
        for s_row, f_row in zip(slow["rows"], fast["rows"], strict=True):
            if s_row["defence"] == "purified":
                slow_r, fast_r = s_row["recall_perturbed"], f_row["recall_perturbed"]
                ratio = f"{fast_r / slow_r:.3f}" if slow_r else f"undefined (slow recall {slow_r})"
                print(f"recall ratio (perturbed fakes) at t={s_row['threshold']:g}: {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
