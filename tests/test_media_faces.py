"""Face detection on real faces, crop geometry in closed form, photos with header-checked size."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from deepshield.errors import DataError
from deepshield.media import (
    CropOptions,
    MediaLimits,
    aligned_crop,
    box_iou,
    crop_box,
    crop_face,
    crops_to_tensor,
    detect_faces,
    detect_faces_near,
    extract,
    face_crops,
    file_faces,
    image_faces,
    probe_video,
    read_media_image,
    read_video_frames,
    video_faces,
)
from deepshield.media.faces import Face, eye_angle
from test_media_video import write_frames


def _ffhq(i: int) -> np.ndarray:
    path = shared_path("data", "faces_ffhq_vs_tpdne", "real", f"real_{i}.png")
    return np.asarray(Image.open(path).convert("RGB"))


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header declares w x h but that holds no pixel data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_crop_box_closed_form_inside_and_at_borders():
    # inside: side = int(100 * 1.3) = 130 around the centre (150, 140)
    assert crop_box((100, 100, 200, 180), 640, 480) == (85, 75, 130)
    assert crop_box((100, 100, 200, 180), 640, 480, border="pad") == (85, 75, 130)
    # top-left border: FF++ clamps the corner at 0 (same side); pad keeps the centred square
    assert crop_box((0, 0, 100, 100), 640, 480) == (0, 0, 130)
    assert crop_box((0, 0, 100, 100), 640, 480, border="pad") == (-15, -15, 130)
    # right border: side 78 at (571, 91) shrinks to the 69 px left in the image
    assert crop_box((580, 100, 640, 160), 640, 480) == (571, 91, 69)
    assert crop_box((580, 100, 640, 160), 640, 480, scale=1.0) == (580, 100, 60)


def test_crop_face_pixels_match_the_box():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_face(img, (580, 100, 640, 160), 69), img[91:160, 571:640])
    padded = crop_face(img, (0, 0, 100, 100), 130, border="pad")
    assert (padded[:15] == 0).all() and (padded[:, :15] == 0).all()
    np.testing.assert_array_equal(padded[15:, 15:], img[:115, :115])
    x = crops_to_tensor([padded, padded])
    assert x.shape == (2, 3, 130, 130) and x.dtype.is_floating_point
    assert float(x[0, 1, 20, 30]) == pytest.approx(padded[20, 30, 1] / 255)


def test_detects_a_real_face_and_none_on_a_blank_image():
    img = _ffhq(0)
    faces = detect_faces(img)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    h, w = img.shape[:2]
    assert x0 < w / 2 < x1 and y0 < h / 2 < y1  # FFHQ crops are centred on the face
    assert 0.3 * w < x1 - x0 < w
    blank = np.full((256, 256, 3), 128, np.uint8)
    assert detect_faces(blank) == []
    assert face_crops(blank, 64) == ([], [])  # no_face: nothing to score


def test_a_strided_view_is_detected_like_its_contiguous_copy():
    """PyAV 18.1.1 returns frames as views with the decoder's padded rows, and tracking cuts
    windows out of frames: dlib read such views as if contiguous and found no face."""
    img = _ffhq(0)
    padded = np.zeros((img.shape[0], img.shape[1] + 32, 3), np.uint8)
    padded[:, : img.shape[1]] = img
    view = padded[:, : img.shape[1]]  # rows 32 pixels longer than the picture
    assert not view.flags["C_CONTIGUOUS"]
    want = detect_faces(img, max_side=None)
    assert len(want) == 1 and detect_faces(view, max_side=None) == want
    prev = [Face(box=tuple(v + 2 for v in want[0].box), score=1.0)]
    assert detect_faces_near(view, prev) == detect_faces_near(img, prev) != []


def test_downscaled_detection_maps_the_box_back_to_full_resolution():
    big = np.asarray(Image.fromarray(_ffhq(1)).resize((512, 512), Image.Resampling.BILINEAR))
    native = detect_faces(big, max_side=None)[0].box
    small = detect_faces(big, max_side=128)[0].box  # detected at 1/4 scale
    reference = [4 * v for v in detect_faces(_ffhq(1), max_side=None)[0].box]
    np.testing.assert_allclose(small, reference, atol=1e-6)  # same detection, scaled by 4
    assert np.abs(np.subtract(small, native)).max() < 0.15 * (native[2] - native[0])


def test_modes_largest_all_none():
    a_big = np.asarray(Image.fromarray(_ffhq(0)).resize((256, 256)))
    canvas = np.zeros((256, 400, 3), np.uint8)
    canvas[:, :256], canvas[:128, 272:] = a_big, _ffhq(2)
    faces_all, crops_all = face_crops(canvas, 64, mode="all", max_side=None)
    assert len(faces_all) == 2 and all(c.shape == (64, 64, 3) for c in crops_all)
    largest, _ = face_crops(canvas, 64, mode="largest", max_side=None)
    assert largest == faces_all[:1] and largest[0].box[2] <= 256  # the 256 px face, left
    whole, crops = face_crops(canvas, 64, mode="none")
    assert whole[0].box == (0.0, 0.0, 400.0, 256.0) and crops[0].shape == (64, 64, 3)


def test_alignment_levels_a_rotated_face():
    big = np.asarray(Image.fromarray(_ffhq(0)).resize((384, 384), Image.Resampling.BILINEAR))
    box = detect_faces(big)[0].box
    base = eye_angle(big, box)
    tilted = np.asarray(Image.fromarray(big).rotate(15, resample=Image.Resampling.BILINEAR))
    tilted_box = detect_faces(tilted, upsample=1)[0].box
    assert eye_angle(tilted, tilted_box) - base == pytest.approx(15, abs=4)
    crop = aligned_crop(tilted, tilted_box, 256)
    assert crop.shape == (256, 256, 3)
    crop_box_256 = (256 / 2.6, 256 / 2.6, 256 - 256 / 2.6, 256 - 256 / 2.6)  # the face box inside
    assert abs(eye_angle(crop, crop_box_256)) < abs(eye_angle(tilted, tilted_box)) - 8


def test_photo_size_is_checked_from_the_header(tmp_path):
    for w, h in ((20000, 20000), (12000, 9000)):  # Pillow's own bomb limit, then ours (100 Mpx)
        path = _png_header_only(tmp_path / f"{w}.png", w, h)
        with pytest.raises(DataError, match="downscale") as e:
            read_media_image(path)
        assert str(path) in str(e.value)
    small_limit = MediaLimits(max_image_pixels=99)
    with pytest.raises(DataError, match="max_image_pixels"):
        read_media_image(_png_header_only(tmp_path / "s.png", 10, 10), small_limit)
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(one)
    img = read_media_image(one)
    assert img.shape == (1, 1, 3) and img[0, 0].tolist() == [10, 20, 30]
    assert detect_faces(img) == []
    grey = tmp_path / "grey.png"
    Image.new("L", (5, 4), 7).save(grey)
    assert read_media_image(grey).shape == (4, 5, 3)
    text = tmp_path / "face.jpg"
    text.write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        read_media_image(text)


def test_a_face_lost_at_640_px_is_searched_again_at_the_photos_full_size(tmp_path, monkeypatch):
    """A photo is searched at 640 px like a video frame; HOG's window is 80 px, so a 128 px face
    in a 2000x1300 photo (a person a few metres away) or a 4000x250 panorama was no_face."""
    face = _ffhq(0)
    for w, h, (x, y) in ((2000, 1300, (900, 600)), (4000, 250, (2500, 60))):
        canvas = np.full((h, w, 3), 110, np.uint8)
        canvas[y : y + 128, x : x + 128] = face
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(canvas).save(path)
        assert detect_faces(canvas) == []  # lost at 640 px
        want = detect_faces(canvas, max_side=None)
        assert len(want) == 1
        x0, y0, x1, y1 = want[0].box
        assert x <= x0 < x1 <= x + 128 and y <= y0 < y1 <= y + 128  # on the pasted face
        assert image_faces(path, CropOptions(size=64)).faces == want
        got = file_faces(path, "image", CropOptions(size=64))  # what a scan worker runs
        assert got.frames[0].faces == want and (got.width, got.height) == (w, h)
        assert got.frames[0].crops[0].shape == (64, 64, 3)
    # more pixels than the retry's budget: searched downscaled to it (1 Mpx here: 1240 px)
    monkeypatch.setattr(extract, "PHOTO_RETRY_PIXELS", 1_000_000)
    big = np.full((1300, 2000, 3), 110, np.uint8)
    big[600:800, 900:1100] = np.asarray(Image.fromarray(face).resize((200, 200)))
    Image.fromarray(big).save(tmp_path / "big.png")
    want = detect_faces(big, max_side=1240)
    assert detect_faces(big) == [] and len(want) == 1
    assert image_faces(tmp_path / "big.png").faces == want
    # a photo whose face is found at 640 px keeps that detection
    small = np.full((700, 1000, 3), 110, np.uint8)
    small[300:500, 400:600] = big[600:800, 900:1100]
    Image.fromarray(small).save(tmp_path / "small.png")
    assert image_faces(tmp_path / "small.png").faces == detect_faces(small) != []


def test_an_empty_photo_or_video_says_it_is_empty(tmp_path):
    """A 0-byte file (a failed download or copy, a cloud placeholder) was "not a readable
    image (UnidentifiedImageError ...)" or "not a readable video container (Invalid data ...)"."""
    for name, read in (("photo.jpg", read_media_image), ("clip.mp4", probe_video)):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError, match=r"empty \(0 bytes\): copy it again") as e:
            read(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_box_iou_closed_form():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)  # 1 / (4 + 4 - 1)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def _on_canvas(face: np.ndarray, x: int, y: int) -> np.ndarray:
    canvas = np.full((300, 480, 3), 100, np.uint8)
    canvas[y : y + face.shape[0], x : x + face.shape[1]] = face
    return canvas


def test_tracking_finds_the_face_near_its_last_box_and_falls_back_when_lost():
    face = np.asarray(Image.fromarray(_ffhq(0)).resize((200, 200), Image.Resampling.BILINEAR))
    before, after = _on_canvas(face, 40, 30), _on_canvas(face, 52, 38)  # moved 12, 8 px
    (prev,) = detect_faces(before)
    (full,) = detect_faces(after)
    (near,) = detect_faces_near(after, [prev])
    assert box_iou(near.box, full.box) > 0.6  # the same face, found in the window only
    w = prev.box[2] - prev.box[0]
    far = Face(box=(470 - w, 290 - w, 470.0, 290.0), score=1.0)  # a box where no face is
    assert detect_faces_near(after, [far]) == []
    faces, crops = face_crops(after, 64, previous=[far])  # lost: the whole frame searched
    assert faces == [full] and np.array_equal(crops[0], face_crops(after, 64)[1][0])


def test_video_faces_marks_frames_without_a_face(tmp_path):
    face = np.asarray(Image.fromarray(_ffhq(0)).resize((256, 256), Image.Resampling.BILINEAR))
    blank = np.full_like(face, 90)
    path = tmp_path / "faces.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=10, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = 256, 256, "yuv444p"
    for i in range(6):
        for p in s.encode(
            av.VideoFrame.from_ndarray(face if i % 2 == 0 else blank, format="rgb24")
        ):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    info, frames = video_faces(path, CropOptions(size=64), frames=None, every=1)
    frames = list(frames)
    assert info.frames == 6 and [f.index for f in frames] == list(range(6))
    assert [f.no_face for f in frames] == [False, True] * 3
    assert all(f.crops[0].shape == (64, 64, 3) for f in frames if not f.no_face)
    _, tracked = video_faces(path, CropOptions(size=64, detect_every=3), frames=None, every=1)
    assert [f.no_face for f in tracked] == [False, True] * 3  # a lost face is not invented
    expected = detect_faces(face)[0].box
    np.testing.assert_allclose(frames[0].faces[0].box, expected, atol=8)
    photo = image_faces(shared_path("data", "faces_ffhq_vs_tpdne", "real", "real_0.png"))
    assert not photo.no_face and photo.crops[0].shape == (256, 256, 3)


FAR_SPOTS = [(300, 200), (1500, 800), (900, 500), (920, 510)]  # x, y of each frame's face
FAR_SIDES = [120, 170, 400, 400]  # px; the last two are found at 640 px


@pytest.fixture(scope="module")
def far_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1920x1080 clip of 4 frames, FFHQ real_0 at FAR_SIDES px at FAR_SPOTS on a noisy wall:
    a person a few metres away (120 px: its HOG box about 70 px, 23 px at 640) and near."""
    rng = np.random.default_rng(0)
    frames = []
    for (x, y), side in zip(FAR_SPOTS, FAR_SIDES, strict=True):
        img = rng.integers(90, 130, (1080, 1920, 3), dtype=np.uint8)
        face = Image.fromarray(_ffhq(0)).resize((side, side), Image.Resampling.BILINEAR)
        img[y : y + side, x : x + side] = np.asarray(face)
        frames.append(img)
    return write_frames(tmp_path_factory.mktemp("far") / "far.mp4", frames)


def test_a_face_lost_at_640_px_in_a_1080p_frame_is_searched_again_at_full_size(far_clip):
    """The 120 and 170 px faces were no_face; a frame is now searched again at full size, and
    a frame whose face is found at 640 px keeps its boxes and crops bit for bit."""
    opts = CropOptions(size=64)
    got = file_faces(far_clip, "video", opts, frames=4, view_side=1920)  # a scan worker's
    assert len(got.frames) == 4 and (got.width, got.height) == (1920, 1080)
    for k, (ff, img) in enumerate(zip(got.frames, got.views, strict=True)):
        (x, y), side = FAR_SPOTS[k], FAR_SIDES[k]
        if side < 400:
            assert detect_faces(img) == []  # the 640 px search alone: no_face before
            assert ff.faces == detect_faces(img, max_side=None) != []
        else:  # a face found at 640 px: the same boxes and crops, bit for bit
            faces, crops = face_crops(img, 64)
            assert ff.faces == faces != []
            assert all(np.array_equal(a, b) for a, b in zip(ff.crops, crops, strict=True))
        x0, y0, x1, y1 = ff.faces[0].box
        assert x <= x0 < x1 <= x + side and y <= y0 < y1 <= y + side  # on the pasted face
        assert ff.crops[0].shape == (64, 64, 3)
    # the service's reader (video_faces) finds the same faces
    _, stream = video_faces(far_clip, opts, frames=4)
    assert [ff.faces for ff in stream] == [ff.faces for ff in got.frames]


def test_the_second_search_of_a_video_frame_tracks_and_is_capped(far_clip, tmp_path, monkeypatch):
    """With --detect-every 2 the detection frame 0 searches again and frame 1 tracks the face
    found there; above FRAME_RETRY_PIXELS a frame is searched downscaled to it; a frame with
    no face at all stays no_face."""
    opts = CropOptions(size=64)
    views = read_video_frames(far_clip, frames=4).images
    tracked = file_faces(far_clip, "video", replace(opts, detect_every=2), frames=4)
    assert tracked.frames[0].faces == detect_faces(views[0], max_side=None)
    assert not any(ff.no_face for ff in tracked.frames)
    # more pixels than the retry's budget (1 Mpx here): searched downscaled to it (1333 px),
    # where the 170 px face is still found and the 120 px one is not
    monkeypatch.setattr(extract, "FRAME_RETRY_PIXELS", 1_000_000)
    capped = file_faces(far_clip, "video", opts, frames=4).frames
    assert capped[0].no_face and detect_faces(views[0], max_side=1333) == []
    assert capped[1].faces == detect_faces(views[1], max_side=1333) != []
    blank = write_frames(tmp_path / "blank.mp4", [np.full((1080, 1920, 3), 110, np.uint8)] * 2)
    assert all(ff.no_face for ff in file_faces(blank, "video", opts, frames=2).frames)


@pytest.mark.slow
def test_scan_scores_a_small_face_in_1080p_video_it_called_no_face(tmp_path):
    """The installed script, as a user runs it: a 1080p clip of a 120 px face was no_face."""
    import csv
    import subprocess

    from test_reliability_inputs import SCRIPT, script_env

    rng = np.random.default_rng(1)
    face = np.asarray(Image.fromarray(_ffhq(0)).resize((120, 120), Image.Resampling.BILINEAR))
    frames = []
    for k in range(3):
        img = rng.integers(90, 130, (1080, 1920, 3), dtype=np.uint8)
        img[500 : 500 + 120, 700 + 10 * k : 820 + 10 * k] = face
        frames.append(img)
    path = write_frames(tmp_path / "far.mp4", frames)
    weights = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    argv = [str(SCRIPT), "--threads", "1", "scan", str(path), "--model", "meso4"]
    argv += ["--weights", str(weights), "--frames", "3", "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, env=script_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "scan.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["verdict"] != "no_face" and row["frames_with_face"] == "3" and row["score"]
    with (tmp_path / "out" / "scan_frames.csv").open() as f:
        boxes = [[float(r[c]) for c in ("x0", "y0", "x1", "y1")] for r in csv.DictReader(f)]
    assert len(boxes) == 3
    for k, (x0, y0, x1, y1) in enumerate(boxes):  # on the pasted face of each frame
        assert 700 + 10 * k <= x0 < x1 <= 820 + 10 * k and 500 <= y0 < y1 <= 620
