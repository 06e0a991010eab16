"""describe(): per-split counts, balance, fake/real ratio and sample shape."""

from __future__ import annotations

import json

import torch

from deepshield.data.splits import Splits, TensorSet
from deepshield.data.summary import counts_note, describe


def _set(n_real: int, n_fake: int, shape=(3, 8, 6)) -> TensorSet:
    y = torch.tensor([0] * n_real + [1] * n_fake)
    return TensorSet(torch.zeros(len(y), *shape, dtype=torch.uint8), y)


def test_describe_image_splits():
    s = Splits("demo", _set(6, 2), _set(3, 0), _set(2, 2))
    d = describe(s)
    assert d["image_size"] == [8, 6] and d["sample_shape"] == [3, 8, 6]
    assert d["train"] == {
        "total": 8,
        "counts": {"real": 6, "fake": 2},
        "balance": {"real": 0.75, "fake": 0.25},
        "fake_real_ratio": 2 / 6,
    }
    assert d["val"]["fake_real_ratio"] == 0.0 and d["test"]["fake_real_ratio"] == 1.0
    json.dumps(d)  # JSON-able as it is
    assert counts_note(s).startswith(
        "train: 6 real / 2 fake (fake/real 0.33); val: 3 real / 0 fake"
    )


def test_describe_multiclass_and_audio():
    y = torch.tensor([0, 1, 2, 2])
    t = TensorSet(torch.zeros(4, 3, 4, 4), y)
    d = describe(Splits("c", t, t, t, classes=["a", "b", "c"]))
    assert d["train"]["counts"] == {"a": 1, "b": 1, "c": 2} and "fake_real_ratio" not in d["train"]
    audio = TensorSet(torch.zeros(4, 16000), torch.tensor([0, 0, 0, 1]))
    d = describe(Splits("s", audio, audio, audio, modality="audio", sample_rate=16000))
    assert d["sample_rate"] == 16000 and d["sample_shape"] == [16000] and "image_size" not in d
    assert d["test"]["fake_real_ratio"] == 1 / 3
