"""The configuration's schema: every section a frozen dataclass, every key a field with a
type, a default and, where it matters, bounds, choices, help text and a flag in its metadata
(:func:`_opt`); each choice of value is declared here once. Checking and loading them is
:mod:`edgeguard.config.loading`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgeguard.detect.profiles import PROFILES


def _opt(default: Any, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[Any, ...] | None = None, doc: str = "", flag: str = "",
         pixels: bool = False) -> Any:
    """A config key. ``flag``: the one-shot commands (blur, detect) take it as a flag
    (``--key-name``) with this help text; ``pixels``: it changes only pixels, not what is
    found or the regions (so `detect` has no flag for it)."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc, "flag": flag,
            "pixels": pixels}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults (the config is frozen)")
    return field(default=default, metadata=meta)


class Mode(StrEnum):
    """``redact.mode``."""

    BLUR = "blur"
    PIXELATE = "pixelate"
    SOLID = "solid"


class Shape(StrEnum):
    """``redact.shape``."""

    ELLIPSE = "ellipse"
    BOX = "box"


OUTPUT_FORMATS = ("same", "jpeg", "png", "webp")
RUNTIMES = ("auto", "litert", "tflite")
VIDEO_AUDIO = ("copy", "drop")
VIDEO_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
SECOND_MODELS = ("profile", "centerface", "none")


@dataclass(frozen=True)
class DetectConfig:
    profile: str = _opt("balanced", choices=tuple(PROFILES),
                        doc="search profile: which views are run (see README)",
                        flag="search profile")
    threads: int = _opt(2, lo=1, hi=16, doc="threads per TFLite interpreter",
                        flag="threads per TFLite interpreter")
    runtime: str = _opt("auto", choices=RUNTIMES,
                        doc="auto (ai_edge_litert, else tflite_runtime), litert or tflite",
                        flag="TFLite runtime")
    min_score: float = _opt(0.0, lo=0.0, hi=0.99,
                            doc="minimum face score after merging views; 0: the profile's",
                            flag="minimum face score (0: profile's)")
    min_face: float = _opt(0.0, lo=0.0, hi=1_000_000.0,
                           doc="smallest face (pixels) the search plans views for; "
                               "0: the profile's",
                           flag="smallest face in pixels to plan views for (0: profile's; a "
                                "huge value leaves only the whole-frame view)")
    flat_std: float = _opt(-1.0, lo=-1.0, hi=255.0,
                           doc="skip tiles whose grey std is below this; 0 never skips; "
                               "-1: the profile's")
    nms_iou: float = _opt(0.3, lo=0.05, hi=0.95,
                          doc="overlap above which two detections are the same face")
    second_model: str = _opt("profile", choices=SECOND_MODELS,
                             doc="second model beside BlazeFace: profile (the profile's), "
                                 "centerface or none")
    second_score: float = _opt(0.0, lo=0.0, hi=0.99,
                               doc="minimum score of the second model's faces; 0: the "
                                   "profile's")
    second_megapixels: float = _opt(0.0, lo=0.0, hi=100.0,
                                    doc="the second model sees each frame at this many "
                                        "megapixels at most; 0: the profile's")
    models_dir: str = _opt("", doc="folder with the .tflite files; empty: the package's models/",
                           flag="folder holding the .tflite models")


@dataclass(frozen=True)
class RedactConfig:
    mode: str = _opt("blur", choices=tuple(Mode), doc="blur, pixelate or solid fill",
                     flag="blur, pixelate or solid", pixels=True)
    shape: str = _opt("ellipse", choices=tuple(Shape), doc="ellipse or box",
                      flag="ellipse or box", pixels=True)
    expand: float = _opt(1.3, lo=1.0, hi=3.0,
                         doc="region size relative to the detected box (privacy first)",
                         flag="region size relative to the face box")
    outline: bool = _opt(False, doc="draw a thin outline around each redacted area",
                         flag="outline regions", pixels=True)
    color: tuple[int, int, int] = _opt((0, 0, 0), doc="RGB fill for solid mode and the outline")


@dataclass(frozen=True)
class InputConfig:
    max_pixels: int = _opt(64_000_000, lo=1, hi=1_000_000_000,
                           doc="largest image accepted, checked from the header before decoding",
                           flag="largest image accepted (pixels)")


@dataclass(frozen=True)
class OutputConfig:
    format: str = _opt("same", choices=OUTPUT_FORMATS, doc="output format; same keeps the input's")
    jpeg_quality: int = _opt(90, lo=1, hi=100, doc="JPEG and WebP quality")
    keep_exif: tuple[str, ...] = _opt((), doc="EXIF tag names allowed through (default none)")
    sidecar: bool = _opt(False, doc="write NAME.json beside each output (counts, timings)")
    video_audio: str = _opt("copy", choices=VIDEO_AUDIO,
                            doc="a video's first audio track: copy (its packets unchanged) "
                                "or drop")


@dataclass(frozen=True)
class DaemonConfig:
    inbox: str = _opt("", doc="watched folder on tmpfs; empty: /run/edgeguard/inbox, else "
                              "/dev/shm/edgeguard-$USER/inbox")
    outbox: str = _opt("", doc="where redacted images go; empty: ./outbox")
    failed: str = _opt("", doc="failed inputs with a .reason file, on the inbox's tmpfs; "
                               "empty: failed/ beside the inbox")
    runtime_dir: str = _opt("", doc="tmpfs folder for the daemon's state file, journal and "
                                    "lock; empty: the inbox's parent folder")
    workers: int = _opt(2, lo=1, hi=16, doc="images processed at once")
    queue_size: int = _opt(64, lo=1, hi=10_000,
                           doc="paths queued in memory beyond the workers; the spool "
                               "itself holds the rest (found again by a rescan)")
    failed_max_count: int = _opt(200, lo=1, hi=1_000_000, doc="failed/ keeps at most this many")
    failed_max_age_s: int = _opt(7 * 86400, lo=60, hi=10**9, doc="failed/ entries older go")
    hide_filenames: bool = _opt(False, doc="keep file names out of the logs")
    stable_s: float = _opt(1.0, lo=0.05, hi=600.0,
                           doc="a file moved in without a close is taken once its size "
                               "has not changed for this long")
    rescan_s: float = _opt(30.0, lo=1.0, hi=86_400.0,
                           doc="the inbox is rescanned this often, for files no event announced")
    stuck_s: float = _opt(120.0, lo=1.0, hi=86_400.0,
                          doc="a worker busy on one image longer than this stops the watchdog "
                              "pings, so systemd restarts the service")
    drain_s: float = _opt(20.0, lo=0.0, hi=3_600.0,
                          doc="on SIGTERM, images in progress get this long to finish")
    max_attempts: int = _opt(3, lo=1, hi=1000,
                             doc="a file the daemon died on (crash, watchdog, out of memory) "
                                 "this many times goes to failed/ instead of being tried again")
    retry_max_s: float = _opt(60.0, lo=1.0, hi=3_600.0,
                              doc="longest wait between retries while the outbox is full or "
                                  "not writable (the wait doubles from 1 s)")


@dataclass(frozen=True)
class VideoConfig:
    """Videos dropped into the inbox or given to `edgeguard blur` (see README, Video input)."""

    quality: int = _opt(23, lo=0, hi=51, doc="H.264 constant rate factor of the re-encoded "
                                             "video: lower is better and larger (x264's crf)")
    preset: str = _opt("ultrafast", choices=VIDEO_PRESETS,
                       doc="x264 speed preset: slower ones make smaller files, not safer ones")
    hold_frames: int = _opt(3, lo=0, hi=60,
                            doc="a face found in frame n stays covered this many frames "
                                "before and after it (following its motion)")
    max_seconds: float = _opt(1800.0, lo=1.0, hi=86_400.0,
                              doc="longest video accepted (from the header, before decoding)")
    max_pixels: int = _opt(2_100_000, lo=1, hi=100_000_000,
                           doc="largest frame accepted, width x height "
                               "(default: 1080p; 4K needs about 4x the memory)")
    max_total_pixels: int = _opt(60_000_000_000, lo=1, hi=10**15,
                                 doc="largest frame count x frame pixels accepted (bounds the "
                                     "work one video may take)")
    keep_metadata: tuple[str, ...] = _opt((), doc="container metadata keys allowed through, "
                                                  "e.g. [\"creation_time\"] (default none)")


CAMERA_POLICIES = ("blank", "drop")
VIDEO_FORMATS = ("mp4", "mkv")
CAMERA_FRAME_SEARCHES = ("main", "lores")
CAMERA_SEARCHES = ("full", "whole")
# none | auto | picamera2[:N] | v4l2:N | file:PATH (checked here so a bad spec fails at load)
_CAMERA_SOURCE = re.compile(r"none|auto|picamera2(:\d+)?|v4l2:\d+|file:.+")


@dataclass(frozen=True)
class CameraConfig:
    source: str = _opt("none", doc="none (inbox only), auto (a camera if there is one), "
                                   "picamera2[:N], v4l2:N (USB webcam) or file:PATH (a video "
                                   "or a folder of images played as a camera)")
    require: bool = _opt(False, doc="refuse to start when no camera is found (else the "
                                    "inbox runs alone)")
    main_size: tuple[int, int] = _opt((1280, 720), doc="full-resolution stream (video and "
                                                       "stills), width and height; file: "
                                                       "sources keep their own size")
    lores_size: tuple[int, int] = _opt((384, 216), doc="reduced stream detection runs on every "
                                                       "frame; keep main's aspect ratio and a "
                                                       "width that is a multiple of 128 (the "
                                                       "ISP's alignment on a Pi 5)")
    lores_search: str = _opt("full", choices=CAMERA_SEARCHES,
                             doc="per-frame search on the lores frame: full (the profile's "
                                 "views, finds smaller faces) or whole (one view, faster)")
    search: str = _opt("main", choices=CAMERA_FRAME_SEARCHES,
                       doc="per-frame search: main (main-resolution pixels: changed regions "
                           "and tracked faces every frame, the rest swept every "
                           "sweep_frames, output delayed delay_frames) or lores (the lores "
                           "frame alone, lores_search; misses faces under ~40 main px)")
    min_face: float = _opt(16.0, lo=8.0, hi=1000.0,
                           doc="smallest face (main pixels, height) the main search looks for")
    sweep_frames: int = _opt(8, lo=1, hi=120,
                             doc="the whole main frame is searched once every this many "
                                 "frames, a slice per frame")
    delay_frames: int = _opt(8, lo=0, hi=120,
                             doc="a frame is written once this many later frames were "
                                 "searched, so a face found later is covered back to its "
                                 "first frame (frames kept in memory; added latency "
                                 "delay_frames x search_every / fps)")
    search_every: int = _opt(1, lo=1, hi=30,
                             doc="search every this many frames; every frame is written, "
                                 "those between covered by the searches before and after "
                                 "them (a live camera's frame that arrives while the loop "
                                 "is behind is left unsearched too)")
    max_views: int = _opt(10, lo=1, hi=1000,
                          doc="main-resolution views per frame for changed regions and "
                              "tracked faces (the sweep's slice comes on top)")
    motion_threshold: int = _opt(20, lo=1, hi=255,
                                 doc="grey-level change (on the lores frame, against a "
                                     "running average) that counts as motion")
    masks: tuple[tuple[tuple[int, int], ...], ...] = _opt(
        (), doc="privacy masks: polygons of main-frame pixels, each a list of at least 3 "
                "[x, y] points inside the frame, redacted in every video frame and still")
    fps: float = _opt(15.0, lo=1.0, hi=120.0, doc="camera frame rate (and the video's)")
    persist_s: float = _opt(1.0, lo=0.0, hi=30.0,
                            doc="a face's region stays this long after it was last detected, "
                                "following its motion")
    failure_policy: str = _opt("blank", choices=CAMERA_POLICIES,
                               doc="a frame whose detection failed or came too late: blank "
                                   "(black frame) or drop; a raw frame is never written")
    max_frame_age_s: float = _opt(2.0, lo=0.05, hi=60.0,
                                  doc="a frame older than this when its detection ends counts "
                                      "as fallen behind (the failure policy applies)")
    still_interval_s: float = _opt(0.0, lo=0.0, hi=86_400.0,
                                   doc="a redacted still every this many seconds; 0: off")
    trigger_file: str = _opt("", doc="a still is taken when this file appears (it is then "
                                     "removed); empty: off")
    video: bool = _opt(False, doc="record redacted video segments into the outbox")
    video_format: str = _opt("mp4", choices=VIDEO_FORMATS,
                             doc="mp4 (MPEG-4 part 2) or mkv (Motion JPEG)")
    segment_s: float = _opt(60.0, lo=1.0, hi=86_400.0, doc="length of one video file")
    video_quota_mb: int = _opt(1024, lo=1, hi=10_000_000,
                               doc="camera videos in the outbox are kept under this total; "
                                   "the oldest go first")


def _camera_problems(c: CameraConfig) -> list[str]:
    """The [camera] checks that span a key's value or several keys, every one that fails."""
    problems = []
    if not _CAMERA_SOURCE.fullmatch(c.source):
        problems.append(f"camera.source: {c.source!r} is not none, auto, picamera2[:N], "
                        "v4l2:N or file:PATH")
    for key in ("main_size", "lores_size"):
        w, h = getattr(c, key)
        if not (16 <= w <= 16384 and 16 <= h <= 16384) or w % 2 or h % 2:
            problems.append(f"camera.{key}: {w}x{h} must be even numbers, 16-16384")
    for i, poly in enumerate(c.masks):
        if len(poly) < 3:
            problems.append(f"camera.masks[{i}]: a polygon needs at least 3 points, "
                            f"got {len(poly)}")
    if c.lores_size[0] > c.main_size[0] or c.lores_size[1] > c.main_size[1]:
        problems.append("camera.lores_size must not be larger than camera.main_size")
    return problems


@dataclass(frozen=True)
class WebConfig:
    """`edgeguard web`: the optional upload page, a separate process from the daemon."""

    listen: str = _opt("127.0.0.1", doc="address the web page listens on (an IP address); "
                                        "anything but loopback also needs allow_lan = true")
    port: int = _opt(8080, lo=1, hi=65535, doc="TCP port of the web page")
    allow_lan: bool = _opt(False, doc="let other machines reach the page (listen on 0.0.0.0 "
                                      "or a LAN address); off: this machine only")
    password_file: str = _opt("/etc/edgeguard/web-password",
                              doc="the sign-in password or token, stored hashed (scrypt); "
                                  "set it with `edgeguard web --set-password`")
    max_upload_mb: int = _opt(30, lo=1, hi=2048, doc="largest photo the page accepts (MB)")
    max_files: int = _opt(20, lo=1, hi=1000,
                          doc="most photos in one upload, and most of the page's photos "
                              "being uploaded or waiting to be redacted at once")
    session_hours: float = _opt(12.0, lo=0.05, hi=720.0, doc="a sign-in lasts this long")
    login_failures: int = _opt(5, lo=1, hi=1000,
                               doc="sign-in attempts checked per client address (or per "
                                   "browser that has signed in before) within "
                                   "login_window_s; further attempts wait their turn")
    login_window_s: float = _opt(300.0, lo=1.0, hi=86_400.0,
                                 doc="the window the failed sign-ins are counted in")
    trusted_proxy: bool = _opt(False, doc="behind a TLS proxy on this machine: take the "
                                          "scheme, host and client address from its "
                                          "X-Forwarded-Proto/-Host/-For headers (Secure "
                                          "cookie, https Origin); only from a loopback peer")


@dataclass(frozen=True)
class Config:
    detect: DetectConfig = field(default_factory=DetectConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = field(default="<defaults>", compare=False)


# Checks beyond one key's type and range, reported like the rest (file and key named).
_CROSS_CHECKS: dict[str, Callable[[Any], list[str]]] = {"camera": _camera_problems}

SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}
