"""The only place the steps are composed: decode -> plan -> detect -> redact -> encode.

A :class:`Pipeline` is built once per process: it checks the models' hashes and creates
one interpreter per model. It is shared by every worker thread; decode, resize, redaction
and encode release the GIL in OpenCV/Pillow, and inference is serialised per model inside
:class:`~edgeguard.detect.runtime.ModelRunner`, so two workers keep two cores busy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeguard import codec, models
from edgeguard.config import Config
from edgeguard.detect import blazeface as bf
from edgeguard.detect.detector import DetectParams, FaceDetector, SecondParams
from edgeguard.detect.dnn import CenterFaceRunner
from edgeguard.detect.planner import Level, PlanParams, plan
from edgeguard.detect.profiles import PROFILES
from edgeguard.detect.runtime import ModelRunner
from edgeguard.errors import DetectionError
from edgeguard.geometry import Box, Detection, Region
from edgeguard.redact import redact, region_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Redacted:
    """A redacted image ready to write: encoded bytes with every metadata block dropped."""

    data: bytes
    format: str  # "jpeg" | "png" | "webp" | "bmp" | "tiff"
    suffix: str  # ".jpg", ".png", ... matching ``format``
    width: int
    height: int
    detections: tuple[Detection, ...]
    regions: tuple[Region, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Detected:
    """What detection found in one image (``edgeguard detect``)."""

    width: int
    height: int
    detections: tuple[Detection, ...]
    regions: tuple[Region, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)


def detect_params(cfg: Config) -> DetectParams:
    """The detector's settings: the profile's values, overridden by non-default config keys."""
    prof = PROFILES[cfg.detect.profile]
    man = models.load_manifest()
    d = cfg.detect
    min_score = d.min_score or prof.min_score
    second_model = prof.second_model if d.second_model == "profile" else d.second_model
    second = None
    if second_model != "none" and second_model:
        second = SecondParams(
            score=d.second_score or prof.second_score,
            megapixels=d.second_megapixels or prof.second_megapixels,
            min_scale=prof.second_min_scale,
            max_scale=prof.second_max_scale,
            box_scale=prof.second_box_scale,
            box_shift=prof.second_box_shift,
            tile_pixels=prof.second_tile_pixels,
            tile_overlap=prof.second_tile_overlap,
        )
    return DetectParams(
        plan=PlanParams(
            whole_model=prof.whole_model,
            whole_size=man.models[prof.whole_model].input_size,
            whole_face_lo=prof.whole_face_lo,
            tile_model=prof.tile_model,
            tile_size=man.models[prof.tile_model].input_size,
            min_face=d.min_face or prof.min_face,
            face_lo=prof.face_lo,
            face_hi=prof.face_hi,
            max_upscale=prof.max_upscale,
            fine_face_lo=prof.fine_face_lo,
            max_views=prof.max_views,
            views_per_mp=prof.views_per_mp,
        ),
        min_score=min_score,
        candidate_score=min(min_score, prof.candidate_score),
        nms_iou=d.nms_iou,
        flat_std=prof.flat_std if d.flat_std < 0 else d.flat_std,
        second=second,
        face_score=prof.face_score,
        solo_min_score=d.min_score or prof.solo_min_score,
    )


def second_model_name(cfg: Config) -> str:
    """The manifest name of the second model the config runs, or "" for none."""
    prof = PROFILES[cfg.detect.profile]
    name = prof.second_model if cfg.detect.second_model == "profile" else cfg.detect.second_model
    return "" if name == "none" else name


class Pipeline:
    """Decode, detect, redact, encode; interpreters created once, at construction."""

    def __init__(self, cfg: Config, *, at_start_up: bool = False) -> None:
        """``at_start_up``: built before any other thread runs (the commands' first
        pipeline), which lets the runtime hide its native banner; a reload's rebuild, beside
        running workers, must not (see :func:`~edgeguard.detect.runtime.quiet_native_stderr`).
        """
        self.cfg = cfg
        self.models_dir = models.resolve_dir(cfg.detect.models_dir)
        params = detect_params(cfg)
        names = sorted({params.plan.whole_model, params.plan.tile_model})
        second_name = second_model_name(cfg)
        paths = models.verify_all(self.models_dir, (*names, *([second_name] if second_name
                                                                else [])))
        man = models.load_manifest()
        runners = {
            n: ModelRunner(paths[n], man.models[n].input_size, man.models[n].num_boxes,
                           threads=cfg.detect.threads, runtime=cfg.detect.runtime,
                           at_start_up=at_start_up)
            for n in names
        }
        self.runtime_name = next(iter(runners.values())).runtime_name
        anchors = {n: bf.generate_anchors(man.blazeface(n)[1]) for n in names}
        sizes = {n: man.models[n].input_size for n in names}
        second = CenterFaceRunner(paths[second_name]) if second_name else None
        self.model_names = (*names, *([second_name] if second_name else []))
        self.detector = FaceDetector(runners, anchors, sizes, params, second)
        logger.info("pipeline ready: profile %s, models %s on %s%s, %d threads",
                    cfg.detect.profile, ",".join(names), self.runtime_name,
                    f" + {second_name} on OpenCV DNN" if second_name else "",
                    cfg.detect.threads)

    def with_config(self, cfg: Config) -> Pipeline:
        """A pipeline for a new config, reusing the interpreters when detection is unchanged."""
        if cfg.detect == self.cfg.detect:
            clone = object.__new__(Pipeline)
            clone.__dict__.update(self.__dict__)
            clone.cfg = cfg
            return clone
        return Pipeline(cfg)

    # -- steps -------------------------------------------------------------------------------

    def find(self, rgb: np.ndarray) -> tuple[list[Detection], list[Region]]:
        """Faces in an RGB frame and the regions the redactor would change."""
        try:
            dets = self.detector.detect(rgb)
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc
        h, w = rgb.shape[:2]
        kept: list[Detection] = []
        regions: list[Region] = []
        for d in dets:  # a face wholly outside the frame has no region and is dropped
            r = region_for(d.box, expand=self.cfg.redact.expand, width=w, height=h)
            if r is not None:
                kept.append(d)
                regions.append(r)
        return kept, regions

    def redact_frame(self, rgb: np.ndarray) -> tuple[list[Detection], list[Region]]:
        """Find and redact faces in ``rgb`` in place."""
        dets, regions = self.find(rgb)
        rc = self.cfg.redact
        redact(rgb, regions, mode=rc.mode, shape=rc.shape, color=rc.color, outline=rc.outline)
        return dets, regions

    def detect_file(self, path: Path) -> Detected:
        t0 = time.perf_counter()
        img = codec.decode_file(path, max_pixels=self.cfg.input.max_pixels)
        t1 = time.perf_counter()
        dets, regions = self.find(img.rgb)
        t2 = time.perf_counter()
        return Detected(img.width, img.height, tuple(dets), tuple(regions),
                     {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3})

    def redact_file(self, path: Path) -> Redacted:
        """The redacted, metadata-free encoding of the image at ``path``.

        Raises InputError for a bad file, DetectionError/RedactionError when a step fails:
        in every case nothing is returned, so nothing can be written (fail closed).
        """
        out = self.cfg.output
        t0 = time.perf_counter()
        img = codec.decode_file(path, max_pixels=self.cfg.input.max_pixels,
                                keep_exif=out.keep_exif)
        t1 = time.perf_counter()
        rgb = img.rgb
        if not rgb.flags.writeable:
            rgb = rgb.copy()
        dets, regions = self.redact_frame(rgb)
        t2 = time.perf_counter()
        fmt = codec.output_format(img.format, out.format)
        # consume: the redacted frame is not used again, so JPEG conversion may reuse it
        data = codec.encode(rgb, fmt, quality=out.jpeg_quality, exif=img.exif or None,
                            consume=True)
        t3 = time.perf_counter()
        return Redacted(data, fmt, codec.suffix_for(fmt), img.width, img.height, tuple(dets),
                        tuple(regions), {"decode": (t1 - t0) * 1e3, "detect_redact":
                                         (t2 - t1) * 1e3, "encode": (t3 - t2) * 1e3})

    # -- the camera's calls --------------------------------------------------------------------
    # The camera searches main-resolution pixels, but not the whole frame every frame: the
    # views of one full search spread over several frames, and crops (changed regions,
    # tracked faces) searched on their own. These calls keep the detector's settings and
    # interpreters in one place.

    def frame_plan(self, width: int, height: int, *, min_face: float) -> tuple[Level, ...]:
        """The views a full search of a ``width`` x ``height`` frame runs, down to faces
        ``min_face`` pixels tall (level 0 is the whole-frame view)."""
        p = self.detector.params.plan
        return plan(width, height, dataclasses.replace(p, min_face=min_face))

    def search_levels(self, rgb: np.ndarray, levels: Sequence[Level]) -> list[Detection]:
        """Faces in ``rgb`` from these views of its :meth:`frame_plan` (a level may list
        a subset of its tiles), in ``rgb`` pixels."""
        try:
            full = [lv for lv in levels if lv.index == 0 or not _partial(lv, rgb)]
            out = self.detector.detect_levels(rgb, full) if full else []
            for lv in levels:
                if lv.index != 0 and _partial(lv, rgb):
                    out.extend(self._search_part(rgb, lv))
            return out
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc

    def _search_part(self, rgb: np.ndarray, lv: Level) -> list[Detection]:
        """A level with a few of its tiles: only the part of the frame under them is
        resized (resizing the whole 1280x720 frame for each level of a sweep slice was a
        sixth of the camera's time)."""
        h, w = rgb.shape[:2]
        s = lv.scale
        lx1 = max(0, min(x for x, _ in lv.tiles))
        ly1 = max(0, min(y for _, y in lv.tiles))
        x1, y1 = int(lx1 / s), int(ly1 / s)
        x2 = min(w, int(np.ceil((max(x for x, _ in lv.tiles) + lv.size) / s)) + 1)
        y2 = min(h, int(np.ceil((max(y for _, y in lv.tiles) + lv.size) / s)) + 1)
        if x2 <= x1 or y2 <= y1:
            return []
        ox, oy = round(x1 * s), round(y1 * s)  # the crop's origin in level pixels
        part = dataclasses.replace(
            lv, width=max(1, round((x2 - x1) * s)), height=max(1, round((y2 - y1) * s)),
            tiles=tuple((x - ox, y - oy) for x, y in lv.tiles))
        crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
        return [_shifted(d, x1, y1) for d in self.detector.detect_levels(crop, [part])]

    def search_rects(self, rgb: np.ndarray, rects: Sequence[Region], *,
                     min_face: float) -> list[Detection]:
        """Faces in main-resolution rectangles of ``rgb`` (each searched on its own, down
        to ``min_face`` pixels), in ``rgb`` pixels. A rectangle is grown to a multiple of
        32 pixels (inside the frame) so the few plans its sizes need stay cached."""
        h, w = rgb.shape[:2]
        out: list[Detection] = []
        for r in rects:
            x1, x2 = _grow_to(r.x1, r.x2, w)
            y1, y2 = _grow_to(r.y1, r.y2, h)
            if x2 <= x1 or y2 <= y1:
                continue
            crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
            levels = self.frame_plan(x2 - x1, y2 - y1, min_face=min_face)
            out.extend(_shifted(d, x1, y1) for d in self.search_levels(crop, levels))
        return out

    def regions(self, boxes: Sequence[Box], width: int, height: int) -> list[Region]:
        """The pixels the redactor changes for these face boxes (``[redact]`` expansion,
        clipped to the frame; a box wholly outside has none)."""
        out = []
        for b in boxes:
            r = region_for(b, expand=self.cfg.redact.expand, width=width, height=height)
            if r is not None:
                out.append(r)
        return out

    def redact_boxes(self, rgb: np.ndarray, boxes: Sequence[Box],
                     extra: Sequence[Region] = ()) -> None:
        """Redact face boxes (expanded) and exact ``extra`` regions of ``rgb`` in place."""
        h, w = rgb.shape[:2]
        rc = self.cfg.redact
        redact(rgb, [*self.regions(boxes, w, h), *extra], mode=rc.mode, shape=rc.shape,
               color=rc.color, outline=rc.outline)


def _partial(lv: Level, rgb: np.ndarray) -> bool:
    """Whether a level's tiles cover well under its whole image (a sweep slice), so
    resizing only the part under them pays."""
    x1 = max(0, min(x for x, _ in lv.tiles))
    y1 = max(0, min(y for _, y in lv.tiles))
    x2 = min(lv.width, max(x for x, _ in lv.tiles) + lv.size)
    y2 = min(lv.height, max(y for _, y in lv.tiles) + lv.size)
    return (x2 - x1) * (y2 - y1) < 0.8 * lv.width * lv.height


def _shifted(d: Detection, dx: float, dy: float) -> Detection:
    b = d.box
    return Detection(Box(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy), d.score,
                     tuple((kx + dx, ky + dy) for kx, ky in d.keypoints))


def _grow_to(lo: int, hi: int, limit: int, step: int = 32) -> tuple[int, int]:
    """[lo, hi) grown to a multiple of ``step`` long (centred, shifted inside [0, limit))."""
    lo, hi = max(0, lo), min(limit, hi)
    size = min(limit, -(-(hi - lo) // step) * step)
    lo = max(0, min(lo - (size - (hi - lo)) // 2, limit - size))
    return lo, lo + size

