"""Find faces with dlib's HOG detector (shipped in the dlib-bin wheel) and crop them as FF++ does.

The box is enlarged 1.3x around its centre and made square, as in FaceForensics++
(Rössler et al., ICCV 2019, `get_boundingbox`) and DeepfakeBench; the crop is resized to the
detector's input size. Boxes are (x0, y0, x1, y1) in pixels of the full-resolution frame,
x1/y1 exclusive.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import dlib
import numpy as np
import torch
from PIL import Image

from deepshield.errors import ConfigError, DataError

FaceMode = Literal["largest", "all", "none"]
Border = Literal["ffpp", "pad"]


@dataclass(frozen=True)
class Face:
    """One detected face: `box` (x0, y0, x1, y1) float px of the full frame, dlib `score`."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when they do not overlap."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@lru_cache(maxsize=1)
def _hog_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


def landmark_model_path(points: int = 5) -> Path:
    """Path of the 5- or 68-point dlib shape predictor shipped by `face-recognition-models`."""
    # The package's __init__ imports pkg_resources (absent here): find its folder without importing.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "face landmarks need the face-recognition-models package: pip install "
            "face-recognition-models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models"
    path = path / f"shape_predictor_{points}_face_landmarks.dat"
    if not path.is_file():
        raise ConfigError(f"{path}: landmark model missing: reinstall face-recognition-models")
    return path


@lru_cache(maxsize=2)
def _shape_predictor(points: int) -> dlib.shape_predictor:
    return dlib.shape_predictor(str(landmark_model_path(points)))


def _hog(
    img: np.ndarray, scale: float, offset: tuple[int, int], upsample: int, threshold: float
) -> list[Face]:
    """HOG faces of uint8 [h,w,3] `img` resized by `scale` (<= 1), boxes mapped back to full-frame
    pixels: divided by the exact per-axis resize factors, then shifted by `offset` (x, y)."""
    h, w = img.shape[:2]
    sx = sy = 1.0
    small = img
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
        sx, sy = size[0] / w, size[1] / h  # the exact factors used, per axis
    # dlib reads the buffer as if it were contiguous: a strided view (a window of a frame, a
    # decoder's padded rows) gave other pixels, and no face where one is
    rects, scores, _ = _hog_detector().run(np.ascontiguousarray(small), upsample, threshold)
    ox, oy = offset
    return [
        Face(
            box=(
                ox + r.left() / sx,
                oy + r.top() / sy,
                ox + (r.right() + 1) / sx,
                oy + (r.bottom() + 1) / sy,
            ),
            score=float(s),
        )
        for r, s in zip(rects, scores, strict=True)
    ]


def _check_rgb(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DataError(f"face detection needs uint8 [H,W,3] RGB, got {img.dtype} {img.shape}")


def detect_faces(
    img: np.ndarray, *, max_side: int | None = 640, upsample: int = 0, threshold: float = 0.0
) -> list[Face]:
    """Faces in uint8 [H,W,3] RGB, detected on a copy downscaled to `max_side`, boxes at full res.

    `max_side=None` detects at native resolution; `upsample` is dlib's pyramid upsampling (finds
    faces smaller than its 80 px window at 4x the cost per step); `threshold` is dlib's
    adjust_threshold (higher = fewer, surer detections). Sorted by area, largest first.
    """
    _check_rgb(img)
    longest = max(img.shape[:2])
    scale = 1.0 if max_side is None or longest <= max_side else max_side / longest
    faces = _hog(img, scale, (0, 0), upsample, threshold)
    return sorted(faces, key=lambda f: f.area, reverse=True)


def detect_faces_near(
    img: np.ndarray, previous: list[Face], *, margin: float = 2.0, face_px: int = 100
) -> list[Face]:
    """Track faces into a new frame: each `previous` face is searched for only in a square window
    `margin` x its box size around its centre, scaled so the face is about `face_px` px (HOG's
    window is 80 px), the largest hit kept. [] when any previous face is not found again: the
    caller then detects on the whole frame. Sorted by area, largest first."""
    _check_rgb(img)
    h, w = img.shape[:2]
    found = []
    for prev in previous:
        x0, y0, x1, y1 = prev.box
        size = max(x1 - x0, y1 - y0, 1.0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, margin * size / 2
        left, top = max(0, int(cx - half)), max(0, int(cy - half))
        right, bottom = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        if right - left < 2 or bottom - top < 2:
            return []
        window = img[top:bottom, left:right]
        hits = _hog(window, min(1.0, face_px / size), (left, top), 0, 0.0)
        if not hits:
            return []
        found.append(max(hits, key=lambda f: f.area))
    return sorted(found, key=lambda f: f.area, reverse=True)


def select_faces(faces: list[Face], mode: FaceMode) -> list[Face]:
    """`largest`: the largest face (or none), `all`: every face; `none` is handled by the caller."""
    if mode == "largest":
        return faces[:1]
    if mode == "all":
        return faces
    raise ConfigError(f"face mode {mode!r} is not one of largest|all|none")


def crop_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    *,
    scale: float = 1.3,
    border: Border = "ffpp",
) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) px around `box` enlarged `scale`x, for an image width x height.

    `ffpp` (FaceForensics++ `get_boundingbox`): the top-left corner is clamped at 0 and the side
    shrunk to fit right/bottom, so the crop lies inside the image (off centre at a border).
    `pad`: the centred square as is; pixels outside the image are zero-padded by `crop_face`.
    """
    x0, y0, x1, y1 = (round(v) for v in box)
    side = int(max(x1 - x0, y1 - y0) * scale)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left, top = cx - side // 2, cy - side // 2
    if border == "pad":
        return left, top, side
    if border != "ffpp":
        raise ConfigError(f"crop border {border!r} is not one of ffpp|pad")
    left, top = max(left, 0), max(top, 0)
    side = min(width - left, height - top, side)
    return left, top, side


def crop_face(
    img: np.ndarray,
    box: tuple[float, float, float, float],
    size: int,
    *,
    scale: float = 1.3,
    border: Border = "ffpp",
) -> np.ndarray:
    """uint8 [H,W,3] -> uint8 [size,size,3]: the `crop_box` square, zero outside, resized bilinear."""
    h, w = img.shape[:2]
    left, top, side = crop_box(box, w, h, scale=scale, border=border)
    if side < 1:
        raise DataError(f"face box {box} gives an empty crop in a {w}x{h} image")
    out = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = img[sy0:sy1, sx0:sx1]
    if side != size:
        out = np.asarray(Image.fromarray(out).resize((size, size), Image.Resampling.BILINEAR))
    return out


def eye_angle(img: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Degrees the eye line is tilted (counter-clockwise in the image), from dlib's 5 landmarks."""
    rect = dlib.rectangle(*(round(v) for v in box))
    shape = _shape_predictor(5)(img, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)  # [5, 2]
    # 5-point model: 0-1 one eye's corners, 2-3 the other's, 4 the nose
    a, b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)
    left_eye, right_eye = (a, b) if a[0] < b[0] else (b, a)
    dx, dy = right_eye - left_eye
    return float(np.degrees(np.arctan2(-dy, dx)))


def aligned_crop(
    img: np.ndarray, box: tuple[float, float, float, float], size: int, *, scale: float = 1.3
) -> np.ndarray:
    """Like crop_face(border='pad') after rotating about the box centre so the eyes are level."""
    angle = eye_angle(img, box)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rotated = Image.fromarray(img).rotate(
        -angle, resample=Image.Resampling.BILINEAR, center=(cx, cy)
    )
    return crop_face(np.asarray(rotated), box, size, scale=scale, border="pad")


def face_crops(
    img: np.ndarray,
    size: int,
    *,
    mode: FaceMode = "largest",
    max_side: int | None = 640,
    scale: float = 1.3,
    border: Border = "ffpp",
    align: bool = False,
    previous: list[Face] | None = None,
) -> tuple[list[Face], list[np.ndarray]]:
    """Detect and crop: (faces, uint8 [size,size,3] crops); ([], []) = no_face; mode none: whole
    image. With `previous` faces (of an earlier frame) they are tracked (`detect_faces_near`)
    and the whole frame is searched only when one is lost."""
    if mode == "none":
        h, w = img.shape[:2]
        whole = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
        return [Face(box=(0.0, 0.0, float(w), float(h)), score=float("nan"))], [whole]
    faces = detect_faces_near(img, previous) if previous else []
    faces = select_faces(faces or detect_faces(img, max_side=max_side), mode)
    if align:
        crops = [aligned_crop(img, f.box, size, scale=scale) for f in faces]
    else:
        crops = [crop_face(img, f.box, size, scale=scale, border=border) for f in faces]
    return faces, crops


def crops_to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    """uint8 [S,S,3] crops -> float32 [N,3,S,S] in [0, 1] (the models' input convention)."""
    if not crops:
        raise DataError("no face crops to stack: the frame has no face (no_face)")
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)  # [N, 3, S, S]
    return x.float().div_(255.0)
