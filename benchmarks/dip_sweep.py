"""DIP purification: many stopping rules and averages from one reconstruction run (exploration).

    PYTHONPATH=src python benchmarks/dip_sweep.py --run RUN_DIR [--seeds 0,1] [--n 16]
        [--net fast|paper] [--lr 0.01] [--iters 1500] [--chunk 16]
        [--smoothing 0,0.9,0.99] [--stop-psnr 27,30,33] [--caps 300,500]
        [--only-perturbed] [--reference slow.json] [--threads 1] [--json out.json]

The images, seeds and selection are those of benchmarks/dip_speed.py (`purification_table` on n
fakes, their FGSM versions and n reals of the run's test split, drawn by each seed). Each
image's DIP trajectory in a grouped model does not depend on when it stops (the network keeps
training; only the kept output freezes) nor on the running average (it does not feed back), so
one run of `--iters` iterations per chunk (`dip_reconstruct(..., observe=...)`) gives, for every
smoothing s, stop target T (dB, or none) and cap c <= iters, exactly the output of
`DipConfig(smoothing=s, stop_psnr=T, iters=c)` (checked against real runs at the start).
Cost of a setting: each chunk runs until its last image stops (the loop's rule on the CPU), at
the CPU seconds per iteration measured for that chunk here; --chunk 1 is the per-image mode.
--only-perturbed reconstructs only the perturbed fakes (the first images of each batch, so
their seeds are unchanged): the recall that the speed goal is about, at a fraction of the cost
(grouped by 9 instead of 16: the same trajectories up to float32 rounding).
The slow reference is this script with --chunk 1 --net paper --smoothing 0.99 --iters 1500
(`PAPER` per image); --reference SLOW.json adds the column dP: the mean |P(fake) - P_slow(fake)|
over the perturbed fakes (how close each setting's scores are to the slow one's, a steadier
measure than counts of images on either side of 0.5).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from torch import Tensor

from deepshield.defenses.dip import FAST, PAPER, DipConfig, dip_reconstruct, psnr
from deepshield.defenses.purifier import purification_table
from deepshield.predict import fake_scores, predict_logits
from deepshield.runs.purify import purification_inputs

THRESHOLDS = (0.25, 0.5)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


class Tracker:
    """Running averages, first crossings of each stop target and snapshots at each cap of one
    chunk, fed by dip_reconstruct's observer."""

    def __init__(self, x: Tensor, smoothings: list[float], targets: list[float], caps: list[int]):
        self.x, self.smoothings, self.targets, self.caps = x, smoothings, targets, set(caps)
        self.avg: dict[float, Tensor | None] = dict.fromkeys(smoothings)
        self.first = {
            (s, t): torch.zeros(len(x), dtype=torch.long) for s in smoothings for t in targets
        }
        self.out = {(s, t): x.clone() for s in smoothings for t in targets}
        self.snap: dict[tuple[float, int], Tensor] = {}
        self.cpu = 0.0  # CPU seconds spent here, not in the reconstruction

    def __call__(self, step: int, out: Tensor) -> None:
        c0 = time.process_time()
        for s in self.smoothings:
            avg = self.avg[s]
            avg = out if avg is None or not s else avg * s + out * (1 - s)  # as dip._fit
            self.avg[s] = avg
            p = psnr(avg, self.x)  # [G]
            for t in self.targets:
                new = (self.first[s, t] == 0) & (p >= t)
                if not new.any():
                    continue
                self.out[s, t] = torch.where(new.view(-1, 1, 1, 1), avg, self.out[s, t])
                self.first[s, t] = torch.where(new, step, self.first[s, t])
            if step in self.caps:
                self.snap[s, step] = avg.clone()
        self.cpu += time.process_time() - c0

    def setting(self, s: float, target: float | None, cap: int) -> tuple[Tensor, Tensor]:
        """(images [G,C,H,W], iterations [G]) of DipConfig(smoothing=s, stop_psnr=target,
        iters=cap)."""
        at_cap, n = self.snap[s, cap], len(self.x)
        if target is None:
            return at_cap, torch.full((n,), cap)
        first = self.first[s, target]
        hit = (first > 0) & (first <= cap)
        images = torch.where(hit.view(-1, 1, 1, 1), self.out[s, target], at_cap)
        return images, torch.where(hit, first, cap)


def run_chunks(
    batch: Tensor, cfg: DipConfig, chunk: int, seed: int, smoothings, targets, caps
) -> list[tuple[Tracker, float]]:
    """One reconstruction per chunk (image i seeded seed + i, as DipPurifier does): trackers and
    CPU seconds per iteration of each chunk."""
    base = replace(cfg, iters=max(caps), stop_psnr=None, smoothing=0.0)
    out = []
    for start in range(0, len(batch), chunk):
        xb = batch[start : start + chunk]
        tracker = Tracker(xb, smoothings, targets, caps)
        rec = dip_reconstruct(xb, base, mode="grouped", chunk=len(xb), seed=seed + start,
                              observe=tracker)  # fmt: skip
        out.append((tracker, (rec.cpu_seconds - tracker.cpu) / base.iters))
    return out


def self_check(batch: Tensor, cfg: DipConfig) -> None:
    """Derived settings equal real runs, bit for bit (2 images, 30 iterations, stop targets
    low enough to be reached)."""
    x = batch[:2]
    for s, t, cap in ((0.0, 14.0, 30), (0.9, 12.0, 25), (0.99, None, 30)):
        (tracker, _), = run_chunks(x, cfg, 2, 7, [s], [14.0, 12.0], [cap, 30])  # fmt: skip
        images, iters = tracker.setting(s, t, cap)
        real = dip_reconstruct(x, replace(cfg, smoothing=s, stop_psnr=t, iters=cap), seed=7)
        assert torch.equal(images, real.images) and torch.equal(iters, real.iters), (s, t, cap)
        print(f"self-check smoothing {s:g}, stop {t}, cap {cap}: iterations {iters.tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="detector run folder (64x64 real/fake images)")
    ap.add_argument("--seeds", default="0,1", help="draws (images and DIP seeds), e.g. 0,1")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--eps", type=float, default=0.02)
    ap.add_argument("--net", choices=["fast", "paper"], default="fast", help="FAST's or PAPER's")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--iters", type=int, default=1000, help="iterations run (the largest cap)")
    ap.add_argument("--chunk", type=int, default=16, help="images per grouped model; 1: per image")
    ap.add_argument("--smoothing", default="0,0.9,0.99")
    ap.add_argument("--stop-psnr", default="27,30,33", help="stop targets in dB")
    ap.add_argument("--caps", default="", help="iteration caps (the run's --iters is added)")
    ap.add_argument("--only-perturbed", action="store_true")
    ap.add_argument("--reference", help="sweep JSON of the slow run (PAPER per image)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(FAST if args.net == "fast" else PAPER, lr=args.lr)
    smoothings, targets = floats(args.smoothing), floats(args.stop_psnr)
    caps = sorted({int(c) for c in floats(args.caps) if c <= args.iters} | {args.iters})

    rows: dict[tuple, dict] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        inputs = purification_inputs(args.run, eps=args.eps, n=args.n, seed=seed)
        table = purification_table(inputs.detector, lambda x: x, inputs.fakes, inputs.fakes_adv,
                                   inputs.reals, blur_baseline=False)  # fmt: skip
        counts, batch = table["counts"], table["images"]["input"]
        if args.only_perturbed:
            counts = {"perturbed": counts["perturbed"], "unperturbed": 0, "reals": 0}
            batch = batch[: counts["perturbed"]]
        if seed == int(args.seeds.split(",")[0]):
            self_check(batch, cfg)
        print(f"seed {seed}: {counts}", flush=True)
        chunks = run_chunks(batch, cfg, args.chunk, seed, smoothings, targets, caps)
        for s in smoothings:
            for cap in caps:
                for t in [None, *targets]:
                    parts = [tr.setting(s, t, cap) for tr, _ in chunks]
                    images = torch.cat([p[0] for p in parts])
                    iters = torch.cat([p[1] for p in parts])
                    cpu = sum(
                        float(p[1].max()) * per for p, (_, per) in zip(parts, chunks, strict=True)
                    )
                    scores = fake_scores(predict_logits(inputs.detector, images)).split(
                        list(counts.values())
                    )
                    r = rows.setdefault(
                        (s, t, cap),
                        {"smoothing": s, "stop_psnr": t, "cap": cap, "images": 0, "cpu": 0.0,
                         "iters": 0, "psnr": 0.0, "hits": {}, "sizes": {}, "p_perturbed": {}},
                    )  # fmt: skip
                    r["images"] += len(images)
                    r["cpu"] += cpu
                    r["iters"] += int(iters.sum())
                    r["psnr"] += float(psnr(images, batch).sum())
                    r["p_perturbed"][seed] = [round(float(v), 4) for v in scores[0]]
                    for (group, sc), th in (
                        (g, th) for g in zip(counts, scores, strict=True) for th in THRESHOLDS
                    ):
                        key = f"{group}@{th:g}"
                        hit = int((sc < th).sum() if group == "reals" else (sc >= th).sum())
                        r["hits"][key] = r["hits"].get(key, 0) + hit
                        r["sizes"][key] = r["sizes"].get(key, 0) + len(sc)

    ref = None
    if args.reference:
        with open(args.reference) as f:
            ref_rows = json.load(f)["rows"]
        longest = max(r["cap"] for r in ref_rows)
        ref = next(r["p_perturbed"] for r in ref_rows if r["smoothing"] == 0.99
                   and r["stop_psnr"] is None and r["cap"] == longest)  # fmt: skip
        for r in rows.values():
            pairs = [(p, q) for k, ps in r["p_perturbed"].items()
                     for p, q in zip(ps, ref[str(k)], strict=True)]  # fmt: skip
            r["dp"] = sum(abs(p - q) for p, q in pairs) / len(pairs)
    print(f"\nnet {args.net}, lr {args.lr:g}, chunk {args.chunk}; pooled over seeds {args.seeds}")
    print(f"{'smooth':>6} {'stop':>5} {'cap':>5} {'iters':>6} {'dB':>5} {'CPU-s/im':>8}  "
          f"{'pert .25':>8} {'pert .5':>8} {'unp .25':>8} {'unp .5':>8} {'real .25':>8} {'real .5':>8}" + ("      dP" if ref else ""))  # fmt: skip
    order = sorted(rows.values(), key=lambda r: (-r["hits"]["perturbed@0.5"], r["cpu"]))
    for r in order:
        cells = [f"{r['hits'][k]}/{r['sizes'][k]}" for k in r["hits"]]
        cells += [""] * (6 - len(cells))
        stop = "-" if r["stop_psnr"] is None else f"{r['stop_psnr']:g}"
        n = r["images"]
        print(f"{r['smoothing']:>6g} {stop:>5} {r['cap']:>5} {r['iters'] / n:>6.0f} "
              f"{r['psnr'] / n:>5.1f} {r['cpu'] / n:>8.2f}  " + " ".join(f"{c:>8}" for c in cells)
              + (f" {r['dp']:>7.3f}" if ref else ""))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": order}, f, indent=1)


if __name__ == "__main__":
    main()
