"""Image-folder source: the three layouts, splits, sizes and one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from deepshield.cli import main
from deepshield.data import load
from deepshield.errors import ConfigError, DataError


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((*size, 3), value, np.uint8)
    a[0, 0] = (value * 7) % 256  # one distinct pixel
    Image.fromarray(a).convert(mode).save(path)


def _class_folder(root: Path, n_real: int = 14, n_fake: int = 6) -> Path:
    for i in range(n_real):
        _png(root / "real" / f"r{i:02d}.png", 10 + i)
    for i in range(n_fake):
        _png(root / "fake" / f"f{i:02d}.jpg" if i % 2 else root / "fake" / f"f{i:02d}.png", 200 + i)
    return root


def _all(s) -> dict[str, tuple[torch.Tensor, int]]:
    return {
        n: (t.x[i], int(t.y[i])) for t in (s.train, s.val, s.test) for i, n in enumerate(t.names)
    }


def test_real_fake_layout_split_by_seed(tmp_path):
    root = _class_folder(tmp_path / "d", n_real=40, n_fake=20)
    s = load(str(root), seed=0)  # a plain existing path -> folder source
    assert s.classes == ["real", "fake"] and s.name.startswith("folder:")
    counts = s.counts()
    assert [counts[k]["real"] for k in ("train", "val", "test")] == [28, 6, 6]
    assert [counts[k]["fake"] for k in ("train", "val", "test")] == [14, 3, 3]
    names = [n for t in (s.train, s.val, s.test) for n in t.names]
    assert len(set(names)) == 60  # disjoint
    for name, (x, y) in _all(s).items():
        assert y == (name.startswith("fake/"))
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 8, 8)
    png = next(n for n in names if n.endswith(".png"))
    assert int(_all(s)[png][0][0, 3, 3]) == int(np.asarray(Image.open(root / png))[3, 3, 0])
    assert "train: 28 real / 14 fake (fake/real 0.50)" in s.notes
    assert load(f"folder:{root}", seed=0).test.names == s.test.names
    assert load(f"folder:{root}", seed=1).test.names != s.test.names


def test_split_layout_keeps_given_splits_and_carves_val(tmp_path):
    for split, k in (("train", 12), ("test", 4)):
        _class_folder(tmp_path / split, n_real=k, n_fake=k)
    s = load(f"folder:{tmp_path}", seed=0)
    assert all(n.startswith("test/") for n in s.test.names) and len(s.test) == 8
    assert all(n.startswith("train/") for n in s.train.names + s.val.names)
    assert len(s.train) + len(s.val) == 24 and s.counts()["val"]["fake"] >= 1
    _class_folder(tmp_path / "val", n_real=2, n_fake=2)
    s = load(f"folder:{tmp_path}", seed=0)
    assert len(s.val) == 4 and all(n.startswith("val/") for n in s.val.names)


def test_labels_csv_layout(tmp_path):
    rows = ["path,label,extra"]
    for i in range(10):
        _png(tmp_path / "imgs" / f"{i}.png", i * 20)
        rows.append(f"imgs/{i}.png,{int(i >= 7)},x")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n\n")
    s = load(str(tmp_path), seed=0)
    labels = {n: y for n, (_, y) in _all(s).items()}
    assert labels == {f"imgs/{i}.png": int(i >= 7) for i in range(10)}
    assert load(str(tmp_path / "labels.csv"), seed=0).test.names == s.test.names


def test_sizes_differ_needs_size(tmp_path):
    root = _class_folder(tmp_path)
    _png(root / "real" / "big.png", 5, size=(16, 12))
    with pytest.raises(
        DataError, match=r"png: image is \d+x\d+ but .* is \d+x\d+: pass size=N"
    ) as e:
        load(str(root), seed=0)
    assert "big.png" in str(e.value) and "16x12" in str(e.value)
    s = load(str(root), seed=0, size=20)
    assert tuple(s.train.x.shape[1:]) == (3, 20, 20)


def test_modes_error_then_convert(tmp_path):
    root = _class_folder(tmp_path)
    _png(root / "fake" / "gray.png", 99, mode="L")
    with pytest.raises(DataError, match=r"gray\.png: image mode L.*convert_modes=True"):
        load(str(root), seed=0)
    s = load(str(root), seed=0, convert_modes=True)
    assert sum(len(t) for t in (s.train, s.val, s.test)) == 21


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda r: None, r"d: folder not found"),
        (lambda r: r.mkdir(), r"d: no real/ and fake/ subfolders"),
        (lambda r: _png(r / "real" / "a.png", 1), r"d/fake: folder missing"),
        (lambda r: (_png(r / "real" / "a.png", 1), (r / "fake").mkdir()), r"d/fake: no images"),
        (
            lambda r: (_class_folder(r), (r / "fake" / "z.png").write_bytes(b"GIF89a")),
            r"z\.png: not a readable image",
        ),
        (
            lambda r: [(r / s).mkdir(parents=True) for s in ("train", "test")],
            r"d/train/real: folder missing",
        ),
        (lambda r: _class_folder(r / "train"), r"d/test: folder missing"),
    ],
)
def test_bad_folders_name_the_file(tmp_path, setup, match):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(DataError, match=match):
        load(f"folder:{root}", seed=0)


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("", r"labels\.csv: empty file"),
        ("file,label\na.png,0\n", r"labels\.csv line 1: header .* lacks"),
        ("path,label\na.png,0\na.png,2\n", r"labels\.csv line 3: label '2' is not 0"),
        (
            "path,label\na.png,0\nmissing.png,1\n",
            r"labels\.csv line 3: image 'missing\.png' not found",
        ),
        ("path,label\na.png\n", r"labels\.csv line 2: 1 fields"),
        ("path,label\na.png,0\na.png,real\n", r"labels\.csv: no rows with label 1 \(fake\)"),
    ],
)
def test_bad_labels_csv_names_file_and_line(tmp_path, csv, match):
    _png(tmp_path / "a.png", 3)
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DataError, match=match):
        load(str(tmp_path), seed=0)


def test_labels_csv_not_utf8(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"path,label\n\xff\xfe,0\n")
    with pytest.raises(DataError, match=r"labels\.csv: cannot read.*UTF-8"):
        load(str(tmp_path), seed=0)


def test_ffhq_vs_tpdne_via_labels_csv():
    root = shared_path("data", "faces_ffhq_vs_tpdne")
    s = load(str(root), seed=0)
    total = {c: sum(s.counts()[k][c] for k in ("train", "val", "test")) for c in ("real", "fake")}
    assert total == {"real": 600, "fake": 200}
    assert tuple(s.train.x.shape[1:]) == (3, 128, 128)
    name = s.test.names[0]
    direct = np.asarray(Image.open(root / name).convert("RGB"))
    assert np.array_equal(s.test.x[0].permute(1, 2, 0).numpy(), direct)
    assert int(s.test.y[0]) == int(name.startswith("fake/"))


def test_n_is_a_seeded_class_stratified_subset(tmp_path):
    root = _class_folder(tmp_path / "d", n_real=30, n_fake=10)
    s = load(str(root), seed=0, n=20)
    names = set(_all(s))
    counts = {c: sum(s.counts()[k][c] for k in ("train", "val", "test")) for c in ("real", "fake")}
    assert counts == {"real": 15, "fake": 5}  # 3:1 like the folder
    assert names == set(_all(load(str(root), seed=0, n=20)))  # same seed, same images
    assert names != set(_all(load(str(root), seed=1, n=20)))
    assert len(_all(load(str(root), seed=0, n=100))) == 40  # n above the size keeps everything


def test_n_keeps_given_splits_in_proportion(tmp_path):
    for split, (r, f) in {"train": (20, 10), "test": (10, 10)}.items():
        for i in range(r):
            _png(tmp_path / split / "real" / f"r{i}.png", i)
        for i in range(f):
            _png(tmp_path / split / "fake" / f"f{i}.png", 100 + i)
    s = load(str(tmp_path), seed=0, n=25)
    c = s.counts()
    assert c["test"]["real"] == 5 and c["test"]["fake"] == 5
    assert c["train"]["total"] + c["val"]["total"] == 15


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": "many"}])
def test_bad_n_is_a_config_error(tmp_path, kw):
    with pytest.raises(ConfigError, match="n="):
        load(str(_class_folder(tmp_path / "d")), seed=0, **kw)


def test_unknown_option_names_the_options_taken(tmp_path):
    with pytest.raises(ConfigError, match=r"no option length; it accepts size=None, convert"):
        load(str(_class_folder(tmp_path / "d")), seed=0, length=3)
    with pytest.raises(ConfigError, match=r"synthetic-faces: no option m; it accepts n="):
        load("synthetic-faces:easy", seed=0, m=3)


def test_folder_n_and_bad_option_in_the_cli(tmp_path, monkeypatch, capsys):
    root = _class_folder(tmp_path / "d")
    monkeypatch.setattr("sys.argv", ["deepshield", "train", "-d", str(root), "--data-arg", "k=1"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "accepts size=None, convert_modes=False, n=None" in err
    assert len(err.strip().splitlines()) == 1


def test_a_source_taking_any_option_is_not_checked():
    from deepshield.data.registry import Source, check_options, options

    def loose(arg, *, seed, **kw):
        return None

    def strict(arg, seed=0, size=8):
        return None

    assert options(Source("loose", loose, "")) is None
    check_options(Source("loose", loose, ""), {"anything": 1})
    assert options(Source("strict", strict, "")) == {"size": 8}
    with pytest.raises(ConfigError, match="strict: no option n"):
        check_options(Source("strict", strict, ""), {"n": 1})
