"""video-folder: face crops of tiny PyAV videos of real faces, the crop cache, splits by pair,
leave-one-pair-out, frame/video-level metrics in closed form, and train + evaluate on it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

import deepshield.media
from conftest import shared_path
from deepshield import data
from deepshield.data.split import group_split
from deepshield.errors import ConfigError, DataError, InputError
from deepshield.media import crop_face, read_video_frames
from deepshield.metrics import video_metrics

FRAMES, SIZE = 3, 32
PAIRS = ("p0", "p1", "p2", "p3")


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    """Near-lossless H.264 4:4:4 MP4 of uint8 [H,W,3] RGB frames at 10 fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=10, options={"qp": "0"})
    s.height, s.width = frames[0].shape[:2]
    s.pix_fmt = "yuv444p"
    for f in frames:
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def _face(i: int) -> np.ndarray:
    path = shared_path("data", "faces_ffhq_vs_tpdne", "real", f"real_{i}.png")
    return np.asarray(Image.open(path).convert("RGB"))  # [128, 128, 3]


def _clip(face: np.ndarray, n: int = 4) -> list[np.ndarray]:
    """n frames of a face on a grey canvas, shifted 4 px right per frame."""
    out = []
    for k in range(n):
        canvas = np.full((160, 192, 3), 90, np.uint8)
        canvas[16:144, 16 + 4 * k : 144 + 4 * k] = face
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 pairs (a real clip and a fake of another face) and one fake clip without a face."""
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for k, pair in enumerate(PAIRS):
        _write_video(root / "real" / f"{pair}.mp4", _clip(_face(k)))
        _write_video(root / "fake" / f"{pair}_swap.mp4", _clip(_face(k + 4)))
        rows += [(f"real/{pair}.mp4", 0, "original", pair)]
        rows += [(f"fake/{pair}_swap.mp4", 1, "FaceSwap", pair)]
    _write_video(root / "fake" / "blank.mp4", [np.full((160, 192, 3), 90, np.uint8)] * 4)
    rows.append(("fake/blank.mp4", 1, "FaceSwap", "blank"))
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label", "method", "pair"), *rows])
    return root


def _load(root: Path, seed: int = 0, **kw: object) -> data.Splits:
    with pytest.warns(UserWarning, match="blank.mp4: no face in any of 3 sampled frames"):
        return data.load(f"video-folder:{root}", seed=seed, frames=FRAMES, size=SIZE, **kw)


def _all(s: data.Splits) -> list[data.TensorSet]:
    return [s.train, s.val, s.test]


def test_crops_carry_video_frame_time_box_method_and_pair(folder):
    s = _load(folder)
    assert data.resolve(str(folder))[0].prefix == "video-folder"  # a bare path is claimed
    assert "skipped (no face in any sampled frame): fake/blank.mp4" in s.notes
    names = s.meta_names
    assert "fake/blank.mp4" not in {
        names["video"][int(v)] for ds in _all(s) for v in ds.meta["video"]
    }
    assert sum(len(ds) for ds in _all(s)) == 8 * FRAMES  # one face in each sampled frame
    for ds in _all(s):
        assert ds.x.shape[1:] == (3, SIZE, SIZE)
        for i in range(len(ds)):
            video = names["video"][int(ds.meta["video"][i])]
            frame = int(ds.meta["frame"][i])
            assert ds.names[i] == f"{video}#{frame}"
            assert frame in (0, 2, 3)  # 3 of 4 frames, evenly spaced, rounded
            assert float(ds.meta["time"][i]) == pytest.approx(frame / 10)
            assert int(ds.y[i]) == (0 if video.startswith("real/") else 1)
            assert names["method"][int(ds.meta["method"][i])] == ("original", "FaceSwap")[ds.y[i]]
            assert names["pair"][int(ds.meta["pair"][i])] == Path(video).stem.split("_")[0]
    # the recorded box is where the crop came from: recrop the decoded frame with it
    ds = s.train
    video = folder / names["video"][int(ds.meta["video"][0])]
    frames = read_video_frames(video, frames=FRAMES)
    img = frames.images[list(frames.indices).index(int(ds.meta["frame"][0]))]
    box = tuple(float(v) for v in ds.meta["box"][0])
    x0, y0, x1, y1 = box
    assert 16 <= (x0 + x1) / 2 - 4 * int(ds.meta["frame"][0]) <= 144 and 16 <= (y0 + y1) / 2 <= 144
    np.testing.assert_array_equal(ds.x[0].permute(1, 2, 0).numpy(), crop_face(img, box, SIZE))


def test_cache_is_reused_without_decoding_and_keyed_by_content_and_options(
    folder, tmp_path, monkeypatch
):
    first = _load(folder)

    def no_decoding(*a: object, **k: object) -> None:
        raise AssertionError("decoded a video that should come from the cache")

    monkeypatch.setattr(deepshield.media, "video_faces", no_decoding)
    again = _load(folder)
    for a, b in zip(_all(first), _all(again), strict=True):
        assert a.names == b.names and (a.x == b.x).all()
        assert all((a.meta[k] == b.meta[k]).all() for k in a.meta)
    copy = tmp_path / "moved"
    shutil.copytree(folder, copy)  # same bytes elsewhere: the SHA-256 key still hits
    assert _load(copy).train.names == first.train.names
    with pytest.raises(AssertionError, match="decoded a video"):  # other options: a new key
        data.load(f"video-folder:{folder}", seed=0, frames=FRAMES, size=SIZE + 8)
    # another retry size for faceless frames (track_faces) could change crops: a new key
    monkeypatch.setattr(deepshield.media.extract, "FRAME_RETRY_PIXELS", 1_000_000)
    with pytest.raises(AssertionError, match="decoded a video"):
        data.load(f"video-folder:{folder}", seed=0, frames=FRAMES, size=SIZE)
    files = list(Path(data.cache.cache_dir(), "video-faces").glob("*.npz"))
    assert files and all(f.suffix == ".npz" for f in files)
    with np.load(files[0], allow_pickle=False) as f:  # plain arrays, no pickled objects
        assert {"crops", "frame", "time", "box"} <= set(f.files)


def test_group_split_never_straddles_and_stratifies_over_seeds():
    rng = np.random.default_rng(0)
    for seed in range(40):
        groups = rng.integers(0, 9, size=60).astype(str)
        y = rng.integers(0, 2, size=60)
        parts = group_split(y, groups, seed=seed)
        assert sorted(np.concatenate(parts).tolist()) == list(range(60))
        seen = [set(groups[p]) for p in parts]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # 5 pairs holding both classes, one fake-only group: 3 / 1 / 1 pairs, val and test both classes
    y = np.array([0, 1] * 5 + [1])
    groups = np.array([f"g{k // 2}" for k in range(10)] + ["alone"])
    for seed in range(20):
        train, val, test = group_split(y, groups, seed=seed)
        assert [len(set(groups[p])) for p in (train, val, test)] == [4, 1, 1]
        assert sorted(y[val]) == sorted(y[test]) == [0, 1] and "alone" in set(groups[train])


def test_splits_by_pair_over_seeds_and_leave_one_pair_out(folder):
    for seed in range(4):
        s = _load(folder, seed=seed)
        pairs = [set(ds.meta["pair"].tolist()) for ds in _all(s)]
        assert all(p for p in pairs) and not (
            pairs[0] & pairs[1] or pairs[0] & pairs[2] or pairs[1] & pairs[2]
        )
        assert all(len(set(ds.y.tolist())) == 2 for ds in (s.val, s.test))
        assert "groups" in s.notes and "test: 1 group (" in s.notes
    s = _load(folder, split="pair:p2")
    names = s.meta_names["pair"]
    assert {names[c] for c in s.test.meta["pair"].tolist()} == {"p2"}
    assert sorted(set(s.test.y.tolist())) == [0, 1]
    assert "p2" not in {names[c] for ds in (s.train, s.val) for c in ds.meta["pair"].tolist()}
    with pytest.raises(ConfigError, match="no pair 'p9'; pairs: blank, p0, p1, p2, p3"):
        data.load(f"video-folder:{folder}", seed=0, frames=FRAMES, size=SIZE, split="pair:p9")
    with pytest.raises(DataError, match="no face in any video of the test split"):
        _load(folder, split="pair:blank")  # the held-out pair has no face at all
    everything = _load(folder, split="test")
    assert len(everything.train) == len(everything.val) == 0 and len(everything.test) == 24


def test_video_metrics_closed_form():
    # video 0 real: frames 0.1 and max(0.9, 0.3) -> 0.5; video 1 fake: 0.6, 0.6 -> 0.6;
    # video 2 real: 0.2 -> 0.2; video 3 fake: 0.3, 0.5 -> 0.4
    videos = [0, 0, 0, 1, 1, 2, 3, 3]
    frames = [0, 5, 5, 0, 1, 7, 0, 9]
    scores = [0.1, 0.9, 0.3, 0.6, 0.6, 0.2, 0.3, 0.5]
    y = [0, 0, 0, 1, 1, 0, 1, 1]
    m = video_metrics(y, scores, videos, frames, names=["a", "b", "c", "d"])
    # fakes {0.6, 0.4} vs reals {0.5, 0.2}: 3 of 4 pairs ordered right
    assert m["video"]["auc"] == pytest.approx(0.75)
    video_y, video_s = [0, 1, 0, 1], [0.5, 0.6, 0.2, 0.4]
    assert m["video"]["ap"] == pytest.approx(average_precision_score(video_y, video_s))
    frame_y, frame_s = [0, 0, 1, 1, 0, 1, 1], [0.1, 0.9, 0.6, 0.6, 0.2, 0.3, 0.5]
    assert m["frame"]["n"] == 7
    assert m["frame"]["auc"] == pytest.approx(roc_auc_score(frame_y, frame_s))
    assert m["frame"]["ap"] == pytest.approx(average_precision_score(frame_y, frame_s))
    assert [(r["video"], r["label"], r["frames"]) for r in m["per_video"]] == [
        ("a", 0, 2),
        ("b", 1, 2),
        ("c", 0, 1),
        ("d", 1, 2),
    ]
    assert [r["score"] for r in m["per_video"]] == pytest.approx(video_s)
    with pytest.raises(InputError, match="both labels"):
        video_metrics([0, 1], [0.2, 0.3], [4, 4], [0, 1])


def test_train_and_evaluate_report_video_level_metrics(folder, tmp_path):
    from typer.testing import CliRunner

    from deepshield.cli import app
    from deepshield.run import RunDir

    spec = f"video-folder:{folder}"
    args = ["train", "-d", spec, "--data-arg", f"size={SIZE}", "--data-arg", f"frames={FRAMES}"]
    args += ["-m", "simplenet", "-e", "1", "--out", str(tmp_path / "run")]
    with pytest.warns(UserWarning, match="no face"):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    test = RunDir(tmp_path / "run").read_json("metrics.json")["test"]
    rows = test["video_level"]["per_video"]
    assert test["video_level"]["video"]["n"] == len(rows) == 2  # one pair: a real and a fake
    assert sum(r["frames"] for r in rows) == test["n"] == 2 * FRAMES
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    again = RunDir(tmp_path / "run").read_json("eval.json")["video_level"]
    assert [r["video"] for r in again["per_video"]] == [r["video"] for r in rows]
    assert [r["score"] for r in again["per_video"]] == pytest.approx([r["score"] for r in rows])


def test_class_folders_without_csv_make_each_video_its_own_group(folder, tmp_path):
    root = tmp_path / "plain"
    shutil.copytree(folder, root, ignore=shutil.ignore_patterns("labels.csv"))
    s = _load(root)
    names = s.meta_names
    assert sorted(names["method"]) == ["fake", "original"]
    assert names["pair"] == sorted(names["video"])  # no pair column: the video is the group
    for ds in _all(s):
        for i in range(len(ds)):
            video = names["video"][int(ds.meta["video"][i])]
            assert int(ds.y[i]) == (0 if video.startswith("real/") else 1)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("real/p0.mp4,maybe", "line 2: label 'maybe' is not 0/real/bonafide or 1/fake/spoof"),
        ("real/gone.mp4,0", "line 2: file 'real/gone.mp4' not found"),
    ],
)
def test_bad_labels_csv_rows_name_the_line(folder, tmp_path, row, message):
    (tmp_path / "real").symlink_to(folder / "real")
    (tmp_path / "labels.csv").write_text(f"file,label\n{row}\nfake/p0_swap.mp4,1\n")
    with pytest.raises(DataError, match=message):
        data.load(f"video-folder:{tmp_path}", seed=0, frames=FRAMES, size=SIZE)
