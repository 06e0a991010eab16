"""DIP purification under non-adaptive and adaptive attacks, side by side, in one run.

    PYTHONPATH=src python benchmarks/adaptive_purifier.py --run RUN_DIR [--n 8] [--eps 2/255,8/255]
        [--steps 10] [--eot-samples 4] [--dip-iters 200] [--threads 1] [--seed 0] [--json out.json]

RUN_DIR is a real/fake image detector run (`deepshield train`). n fakes and n reals of its test
split (drawn by seed, as `deepshield defend purify` draws them) are attacked with L-inf PGD
(`steps` steps, random start) at each eps, and the detector behind Deep Image Prior purification
(`dip.FAST` capped at --dip-iters iterations) is evaluated on the examples, crafted:
- undefended: white-box on the bare detector, evaluated on the bare detector (reference);
- none: on the bare detector, evaluated behind the purifier (the non-adaptive setting);
- bpda: through BPDA (the attacker's own DIP forward, identity backward);
- eot: BPDA with a new DIP initialisation on every pass, each gradient the mean of
  --eot-samples passes.
The defender's DIP seeds are never the attacker's (`defenses.adaptive.DEFENDER_SEED`). It prints
accuracy and fakes passed as real per eps and threat, the CPU seconds of each threat and the
DIP reconstructions it ran; each threat is `deepshield attack RUN --purify dip --adaptive ...`
on these images.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from fractions import Fraction

import torch

from deepshield.attacks.sweep import AttackSpec, transfer_sweep
from deepshield.defenses.adaptive import ADAPTIVE, PurifierThreat
from deepshield.defenses.dip import FAST
from deepshield.defenses.purifier import DipPurifier
from deepshield.runs.purify import purification_inputs


def dip_images(model: torch.nn.Module) -> int:
    """Images reconstructed by every DipPurifier inside `model` so far."""
    found = [m.forward_fn for m in model.modules() if hasattr(m, "forward_fn")]
    found += [m.purifier for m in model.modules() if hasattr(m, "purifier")]
    return sum(p.images for p in found if isinstance(p, DipPurifier))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="real/fake image detector run folder")
    ap.add_argument("--n", type=int, default=8, help="fakes and reals drawn from the test split")
    ap.add_argument("--eps", default="2/255,8/255", help="L-inf budgets, comma-separated")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--eot-samples", type=int, default=4, help="DIP passes per EOT gradient")
    ap.add_argument("--dip-iters", type=int, default=200, help="DIP iteration cap (FAST: 500)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all numbers to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    eps = tuple(float(Fraction(e)) for e in args.eps.split(","))
    inputs = purification_inputs(args.run, n=args.n, seed=args.seed)
    x = torch.cat([inputs.fakes, inputs.reals])  # [2n, C, H, W]
    y = torch.cat([torch.ones(len(inputs.fakes)), torch.zeros(len(inputs.reals))]).long()
    dip = replace(FAST, iters=args.dip_iters)
    print(f"{len(inputs.fakes)} fakes + {len(inputs.reals)} reals of {inputs.dataset}, "
          f"{tuple(x.shape[1:])}; PGD-{args.steps}; DIP cap {dip.iters} iterations, stop at "
          f"{dip.stop_psnr} dB; {args.threads} thread(s)")  # fmt: skip

    results = {}
    for adaptive in ADAPTIVE:
        passes = args.eot_samples if adaptive == "eot" else 1
        spec = AttackSpec("pgd", eps, steps=args.steps, seed=args.seed, eot_samples=passes)
        crafter, defended = PurifierThreat(adaptive, dip, chunk=len(x)).models(
            inputs.detector, args.seed
        )
        t0, w0 = time.process_time(), time.perf_counter()
        out = transfer_sweep(crafter, {"defended": defended}, x, y, spec, batch_size=len(x))
        seconds = time.process_time() - t0
        res = out["defended"]
        results[adaptive] = {
            "eot_samples": passes,
            "clean": res.clean(),
            "rows": res.rows(),
            "cpu_seconds": seconds,
            "wall_seconds": time.perf_counter() - w0,
            "dip_images": dip_images(crafter) + dip_images(defended),
        }
        if adaptive == "none":  # the bare detector crafted white-box: the undefended reference
            bare = [{"eps": r["eps"], "accuracy": r["surrogate_accuracy"]} for r in res.rows()]
            results["undefended"] = {"rows": bare}
        print(f"{adaptive}: {seconds:.0f} CPU s, {results[adaptive]['dip_images']} DIP images",
              flush=True)  # fmt: skip

    clean = results["none"]["clean"]
    print(f"\nclean: purified accuracy {clean['accuracy']:.3f}, fakes passed as real "
          f"{clean['fake_passed_as_real']:.3f}")  # fmt: skip
    print(
        "eps x 255 | undefended acc | purified acc: none / bpda / eot | fakes passed: none / "
        "bpda / eot"
    )
    for k, e in enumerate(eps):
        acc = [results[a]["rows"][k]["accuracy"] for a in ADAPTIVE]
        fpr = [results[a]["rows"][k]["fake_passed_as_real"] for a in ADAPTIVE]
        print(
            f"{e * 255:9.3g} | {results['undefended']['rows'][k]['accuracy']:14.3f} | "
            + " / ".join(f"{v:.3f}" for v in acc)
            + " | "
            + " / ".join(f"{v:.3f}" for v in fpr)
        )
    if args.json:
        meta = {"run": args.run, "n": args.n, "eps": list(eps), "steps": args.steps,
                "dip_iters": args.dip_iters, "threads": args.threads, "seed": args.seed}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({**meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
