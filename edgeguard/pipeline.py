"""The only place the steps are composed: decode -> plan -> detect -> redact -> encode.

A :class:`Pipeline` is built once per process: it checks the models' hashes and creates
one interpreter per model. It is shared by every worker thread; decode, resize, redaction
and encode release the GIL in OpenCV/Pillow, and inference is serialised per model inside
:class:`~edgeguard.detect.runtime.ModelRunner`, so two workers keep two cores busy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeguard import codec, models
from edgeguard.config import Config
from edgeguard.detect import blazeface as bf
from edgeguard.detect.detector import DetectParams, FaceDetector, SecondParams
from edgeguard.detect.dnn import CenterFaceRunner
from edgeguard.detect.planner import PlanParams
from edgeguard.detect.profiles import PROFILES
from edgeguard.detect.runtime import ModelRunner
from edgeguard.errors import DetectionError
from edgeguard.geometry import Detection, Region
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
class Found:
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
    # A min_score set in the config is the threshold, for every path (the profile's
    # low_score would otherwise keep what it rejects).
    low_score = min_score if d.min_score else min(prof.low_score, min_score)
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
        candidate_score=min(low_score, prof.candidate_score),
        nms_iou=d.nms_iou,
        flat_std=prof.flat_std if d.flat_std < 0 else d.flat_std,
        low_score=low_score,
        min_support=prof.min_support,
        band_lo=prof.band_lo,
        band_hi=prof.band_hi,
        second=second,
        face_score=prof.face_score,
    )


def second_model_name(cfg: Config) -> str:
    """The manifest name of the second model the config runs, or "" for none."""
    prof = PROFILES[cfg.detect.profile]
    name = prof.second_model if cfg.detect.second_model == "profile" else cfg.detect.second_model
    return "" if name == "none" else name


class Pipeline:
    """Decode, detect, redact, encode; interpreters created once, at construction."""

    def __init__(self, cfg: Config) -> None:
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
                           threads=cfg.detect.threads, runtime=cfg.detect.runtime)
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

    def detect_file(self, path: Path) -> Found:
        t0 = time.perf_counter()
        img = codec.decode_file(path, max_pixels=self.cfg.input.max_pixels)
        t1 = time.perf_counter()
        dets, regions = self.find(img.rgb)
        t2 = time.perf_counter()
        return Found(img.width, img.height, tuple(dets), tuple(regions),
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
