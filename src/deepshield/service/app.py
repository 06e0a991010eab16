"""The scan service: a FastAPI app over one run's detector, or an image run's and a speech run's
together (`speech_run`: audio uploads go to the speech detector, and a video's sound is scored
by it beside the frames' answer: `audio_track`, `audio_error`, `note`).

  POST /v1/scan   multipart field `file` (image runs: PNG/JPEG/WebP/BMP photos and MP4/MOV/
                  WebM/MKV/AVI videos; speech runs: WAV/FLAC/OGG/MP3/M4A, read by the one audio
                  reader and scored in windows of the clip length as `deepshield scan` scores
                  them), query explain=true adds the Grad-CAM (or saliency) overlay as a base64
                  PNG; a video answers per-frame scores and face boxes
                  (`deepshield.service.media_uploads`)
  GET  /healthz   {"status": "ok", "model", "run", ...}
  GET  /          a self-contained page: drop a file, see the verdict and the heat map

Every refusal is answered 4xx with JSON {"error": "..."}; the server keeps serving. Requests
with a Host not served get 400, without the token (when one is set) 401, and uploads past the
decoding budget 503 with Retry-After (`deepshield.service.guards`).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deepshield.errors import ConfigError, DeepshieldError
from deepshield.media.types import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES, sniff
from deepshield.service.guards import LOOPBACK_NAMES, DecodeBudget, check_host, check_token
from deepshield.service.media_uploads import (
    FRAMES_HELD,
    AudioPlan,
    MediaRules,
    audio_cost,
    audio_plan,
    probe_upload,
    scan_audio,
    scan_photo,
    scan_track,
    scan_video,
    temporary_folder,
    video_limits,
)
from deepshield.service.scanner import Scanner, run_kind
from deepshield.service.uploads import (
    Upload,
    UploadError,
    check_type,
    decode_image,
    header_size,
    read_upload,
)

ENDPOINTS = ": the service answers POST /v1/scan, GET /healthz and GET /"
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MIN_SIDE = 16
DECODE_BUDGET = 2 * MAX_PIXELS  # decoded pixels in flight: two images at the pixel limit
DECODE_WAIT_S = 5.0

# The page loads nothing from elsewhere: its own inline script and style, images from data:/blob:.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; media-src blob:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'"
)


def create_app(
    run_dir: str | Path,
    *,
    max_bytes: int = MAX_BYTES,
    threshold: float | str | None = None,
    device: str | torch.device = "cpu",
    input_size: int | tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES,
    token: str | None = None,
    decode_budget: int = DECODE_BUDGET,
    decode_wait_s: float = DECODE_WAIT_S,
    decision: Any = None,
    media_rules: MediaRules | None = None,
    unsure: float | None = None,
    speech_run: str | Path | None = None,
    speech_decision: Any = None,
) -> FastAPI:
    """The scan service for the detector of `run_dir`, loaded once (eval mode).

    decision: the run's `deepshield.runs.decision.Decision` (`load_decision(run_dir)`; None:
    uncalibrated), or a file-level one fitted on a scan of the same weights and media rules
    (checked by the caller: `serve --decision`), which makes each file's p_fake as `deepshield
    scan --decision` does (a photo's faces found and scored as a video frame's). threshold: None (the decision's, else 0.5), a number in [0, 1], or "eer" (the
    run's test EER threshold); a scan is called fake when p_fake >= threshold + unsure, real
    below threshold - unsure, else unsure (unsure: the band's half-width, None: the decision's,
    else 0.05), p_fake being the P(fake) calibrated by the decision when it has a calibrator.
    input_size: the image size (N or (H, W)) or clip
    length to feed the model, when the run's own (see `deepshield.service.scanner`) is not wanted.
    max_bytes: upload limit; max_pixels / min_side: image size limits, checked from the header.
    allowed_hosts: Host names answered ('*' any); token: bearer token every request but the page
    needs (None: none); decode_budget: decoded pixels in flight, waited for up to decode_wait_s.
    media_rules: frames sampled from a video, face mode, tracking (detect_every), and the
    duration / frame-count limits of video and audio uploads (`MediaRules` defaults).
    speech_run: a speech detector's run served beside the image run `run_dir` (its
    `speech_decision` its own decision.json, None: uncalibrated): it answers audio uploads and
    scores a video's sound beside its frames (`scan_track`); threshold, unsure and input_size
    are the image run's. ConfigError when either run is of the other kind.
    """
    if speech_run is not None:
        check_pair(str(run_dir), str(speech_run))
    scanner = Scanner(
        str(run_dir),
        threshold=threshold,
        device=device,
        input_size=input_size,
        decision=decision,
        unsure=unsure,
    )
    speech = (
        None
        if speech_run is None
        else Scanner(str(speech_run), device=device, decision=speech_decision)
    )
    page = resources.files("deepshield.service").joinpath("page.html").read_text("utf-8")
    app = FastAPI(
        title="deepshield scan",
        summary="P(fake) and Grad-CAM of one detector run",
        docs_url=None,  # the interactive docs load JS from a CDN; the service stays offline
        redoc_url=None,
    )
    app.state.scanner = scanner
    app.state.speech = speech
    app.state.budget = budget = DecodeBudget(decode_budget, decode_wait_s)
    rules = media_rules or MediaRules()
    limits = video_limits(rules, max_bytes, max_pixels)
    accepted = IMAGE_TYPES + VIDEO_TYPES if scanner.kind == "image" else AUDIO_TYPES
    if speech is not None:
        accepted += tuple(k for k in AUDIO_TYPES if k not in accepted)
    hearer = speech or (scanner if scanner.kind == "audio" else None)  # answers audio uploads

    def heard(up: Upload) -> bool:
        """Whether `up` goes to the speech detector."""
        return hearer is not None and (scanner.kind == "audio" or sniff(up.data) in AUDIO_TYPES)

    def image_cost(up: Upload) -> int:
        """Pixels decoding the image `up` will hold: what its header declares, capped at the
        pixel limit; the limit itself when the header says nothing."""
        kind = sniff(up.data)
        if kind not in IMAGE_TYPES:
            return 0  # refused from its magic bytes, before any decoding
        size = header_size(up.data, kind)
        return max_pixels if size is None else min(size[0] * size[1], max_pixels)

    def scan_sound(up: Upload, explain: bool, plan: AudioPlan) -> dict:
        if sniff(up.data) is not None:  # bytes of no known type: the audio reader says why
            check_type(up, accepted)  # an image, or a type its name or header contradicts
        return scan_audio(hearer, up, rules, explain, plan)

    def scan_picture(up: Upload, explain: bool) -> dict:
        kind = check_type(up, accepted)
        im = decode_image(up, kind, max_pixels=max_pixels, min_side=min_side)
        if scanner.file_level:  # scored as the scan whose file scores the decision was fit on
            return scan_photo(scanner, im, rules, explain)
        return scanner.scan_image(im, explain)

    @app.post(
        "/v1/scan",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        },
    )
    async def scan(request: Request, explain: bool = False) -> dict:
        """Scan one uploaded file: P(fake), the label at the threshold, optionally Grad-CAM."""
        up = await read_upload(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            field="file",
            max_bytes=max_bytes,
        )
        if scanner.kind == "image" and sniff(up.data) in VIDEO_TYPES:
            out = await scan_video_upload(up, explain)
        elif heard(up):
            plan = await run_in_threadpool(audio_cost, up, rules, max_pixels)
            async with budget.hold(plan.samples):
                out = await run_in_threadpool(scan_sound, up, explain, plan)
        else:
            async with budget.hold(image_cost(up)):
                out = await run_in_threadpool(scan_picture, up, explain)
        digest = await run_in_threadpool(lambda: hashlib.sha256(up.data).hexdigest())
        return out | {"bytes": len(up.data), "sha256": digest}

    async def scan_video_upload(up: Upload, explain: bool) -> dict:
        """Probe under one frame's budget, then decode and score under FRAMES_HELD frames';
        with a speech detector, then its sound under the samples its track holds (an upload
        with sound only goes to the speech detector, under the samples it declares)."""
        folder = temporary_folder()
        try:
            async with budget.hold(max_pixels):  # the probe decodes the first frame at most
                path, info, track = await run_in_threadpool(
                    probe_upload, up, accepted, folder.name, limits, sound=speech is not None
                )
            if info is None:  # sound only
                plan = audio_cost(up, rules, max_pixels, track)
                async with budget.hold(plan.samples):
                    return await run_in_threadpool(scan_audio, hearer, up, rules, explain, plan)
            async with budget.hold(info.width * info.height * FRAMES_HELD):
                out = await run_in_threadpool(scan_video, scanner, up, path, limits, rules, explain)
            if speech is not None:
                plan = audio_plan(track, rules.max_video_s, max_pixels)
                async with budget.hold(plan.samples if track is not None else 0):
                    sound = await run_in_threadpool(
                        scan_track, speech, up, path, track, rules, plan
                    )
                # the frames' note (faces unlike the decision's files) first, as scan's row
                notes = (out.get("note"), sound["note"])
                out |= sound | {"note": "; ".join(filter(None, notes)) or None}
            return out
        finally:
            await run_in_threadpool(folder.cleanup)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            check_host(request.headers.get("host"), allowed_hosts)
            if token is not None and request.url.path != "/":
                check_token(request.headers.get("authorization"), token)
        except UploadError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness and what is being served."""
        media = (
            {
                "video": {"frames": rules.frames, "faces": rules.faces}
                | {"detect_every": rules.detect_every}
                | {"max_seconds": rules.max_video_s, "max_frames": rules.max_video_frames}
            }
            if scanner.kind == "image"
            else {}
        )
        if hearer is not None:
            media |= {"max_audio_seconds": rules.max_audio_s, "max_audio_windows": rules.frames}
        if speech is not None:
            media["speech"] = speech.describe()
        return {"status": "ok", **scanner.describe(), "max_bytes": max_bytes, **media}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        """The drop-a-file page (no external scripts, styles or fonts)."""
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, e: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=e.headers)

    @app.exception_handler(DeepshieldError)
    async def _input_error(_: Request, e: DeepshieldError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        hint = ENDPOINTS if e.status_code in (404, 405) else ""
        return JSONResponse(
            {"error": f"{where}: {e.detail}{hint}"}, status_code=e.status_code, headers=e.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        # last resort, for a cause not yet fixed: JSON, not plain text; the server still logs
        # the traceback (Starlette re-raises it to uvicorn after this answer)
        return JSONResponse(
            {
                "error": f"{request.method} {request.url.path}: unexpected {type(e).__name__} "
                "in the server (logged there): please report it with the file you sent"
            },
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_query(_: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return JSONResponse({"error": f"{where}: {err['msg']}"}, status_code=422)

    return app


def check_pair(run_dir: str, speech_run: str) -> None:
    """ConfigError unless `run_dir` holds an image detector and `speech_run` a speech one (read
    from their model.json, before either model is loaded)."""
    name, kind = run_kind(speech_run)
    if kind != "audio":
        raise ConfigError(
            f"--speech-run {speech_run}: holds {name}, not a speech detector ({kind} model); "
            "give a speech detector run (e.g. aasist_l, mel_cnn) to --speech-run"
        )
    name, kind = run_kind(run_dir)
    if kind != "image":
        raise ConfigError(
            f"{run_dir}: holds {name}, not an image detector ({kind} model), while "
            f"--speech-run {speech_run} gives the speech detector: give an image detector run "
            "first (serve IMAGE_RUN --speech-run SPEECH_RUN)"
        )
