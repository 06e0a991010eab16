"""What a dataset holds: per-split counts, class balance, fake/real ratio and sample shape."""

from __future__ import annotations

from typing import Any

from deepshield.data.splits import Splits

SPLITS = ("train", "val", "test")


def describe(splits: Splits) -> dict[str, Any]:
    """Summary dict of `splits` (JSON-able).

    Keys: name, modality, classes, sample_shape ([C,H,W] or [T]), image_size ([H,W], images only),
    sample_rate (audio), and per split: total, counts per class, balance (class fractions) and
    fake_real_ratio (two-class sets: samples of label 1 per sample of label 0; None if no label 0).
    """
    x = splits.train.x
    out: dict[str, Any] = {
        "name": splits.name,
        "modality": splits.modality,
        "classes": list(splits.classes),
        "sample_shape": list(x.shape[1:]),
    }
    if splits.modality == "image":
        out["image_size"] = list(x.shape[-2:])
    else:
        out["sample_rate"] = splits.sample_rate
    for name in SPLITS:
        y = splits.split(name).y
        counts = {c: int((y == i).sum()) for i, c in enumerate(splits.classes)}
        total = len(y)
        entry: dict[str, Any] = {
            "total": total,
            "counts": counts,
            "balance": {c: (k / total if total else 0.0) for c, k in counts.items()},
        }
        if splits.num_classes == 2:
            n0, n1 = counts[splits.classes[0]], counts[splits.classes[1]]
            entry["fake_real_ratio"] = n1 / n0 if n0 else None
        out[name] = entry
    return out


def counts_note(splits: Splits) -> str:
    """Counts per split in one line: 'train: 420 real / 140 fake (fake/real 0.33); val: ...'."""
    info = describe(splits)
    lines = []
    for name in SPLITS:
        e = info[name]
        parts = " / ".join(f"{k} {c}" for c, k in e["counts"].items())
        ratio = e.get("fake_real_ratio")
        tail = (
            f" ({splits.classes[1]}/{splits.classes[0]} {ratio:.2f})" if ratio is not None else ""
        )
        lines.append(f"{name}: {parts}{tail}")
    return "; ".join(lines)
