"""In-memory datasets and the train/val/test bundle every loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


class TensorSet(Dataset):
    """Samples held in memory. Images: uint8 [N,C,H,W] (served as float in [0,1]) or float;
    speech: float32 [N,T] in [-1,1]. Labels: int64 [N]. `names`: one id per sample (file name).
    `meta`: optional per-sample tensors [N,...] (e.g. `boxes` [N,4] of a known artefact region)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        names: Sequence[str] | None = None,
        meta: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x = x
        self.y = y.long()
        self.names = list(names) if names is not None else [str(i) for i in range(len(x))]
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.y)

    def _float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._float(self.x[i]), self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched fetch (DataLoader uses it with `collate_fn=as_batch`)."""
        t = torch.as_tensor(idx)
        return self._float(self.x[t]), self.y[t]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples as float x and int64 y."""
        return self._float(self.x), self.y

    def subset(self, idx: Sequence[int] | torch.Tensor) -> TensorSet:
        t = torch.as_tensor(idx, dtype=torch.long)
        meta = {k: v[t] for k, v in self.meta.items()}
        return TensorSet(self.x[t], self.y[t], [self.names[i] for i in t.tolist()], meta)


def as_batch(batch: object) -> object:
    """collate_fn for TensorSet's batched __getitems__ (already a batch)."""
    return batch


@dataclass
class Splits:
    """A dataset's train / val / test splits and what its labels mean."""

    name: str
    train: TensorSet
    val: TensorSet
    test: TensorSet
    classes: list[str] = field(default_factory=lambda: ["real", "fake"])
    modality: str = "image"  # image | audio
    sample_rate: int | None = None  # audio only
    notes: str = ""
    systems: list[str] = field(default_factory=list)  # name of each meta["system"] code
    meta_names: dict[str, list[str]] = field(default_factory=dict)  # meta[key] code -> name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> TensorSet:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split: samples per class name, plus 'total'."""
        out: dict[str, dict[str, int]] = {}
        for s in ("train", "val", "test"):
            y = self.split(s).y
            c = {name: int((y == i).sum()) for i, name in enumerate(self.classes)}
            c["total"] = len(y)
            out[s] = c
        return out


@dataclass(frozen=True)
class Subset:
    """A `--n` subset of a split: the samples and the line that says how they were drawn."""

    data: TensorSet
    note: str


def stratified_subset(
    ds: TensorSet, n: int | None, *, seed: int, classes: Sequence[str] | None = None
) -> Subset:
    """At most `n` samples of ds, drawn at random by `seed` keeping each class's share (sorted
    order); n None or >= len(ds): all of them. Every `--n` of the CLI goes through here, so a
    split stored class by class (all reals first) never gives a one-class subset."""
    from deepshield.data.split import stratified_take

    total = len(ds)
    if n is not None and n < total:
        ds = ds.subset(stratified_take(ds.y.numpy(), n, seed=seed))
    names = list(classes) if classes is not None else []
    counts = ", ".join(
        f"{int((ds.y == c).sum())} {names[c] if c < len(names) else f'class {c}'}"
        for c in torch.unique(ds.y).tolist()
    )
    how = f"class-stratified random draw, seed {seed}" if len(ds) < total else "all"
    return Subset(ds, f"{len(ds)} of {total} samples ({how}): {counts}")
