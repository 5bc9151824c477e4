"""One camera frame's way: search -> tracker -> bracket -> redact -> video and stills.

Run by the loop thread alone. Per frame:

1. search it (the main-resolution search of :mod:`edgeguard.camera.search`, or the lores
   frame alone), or not: a frame is searched every ``search_every`` frames and only when
   no newer frame waits behind it in a live camera's queue, so a search slower than the
   camera costs searched frames, never written ones;
2. the tracker turns the detections into the boxes to cover (persistence, motion); an
   unsearched frame gets the tracker's boxes for its time (the searches before it);
3. the bracket holds it until ``delay_frames`` searched frames follow, and carries back
   the faces they find (the searches after it);
4. the released frame is redacted in place (``[redact]``, through the pipeline) with the
   privacy masks, handed to the video writer, and offered as a still when one is due.

Fail closed: when detection or redaction fails, or the frame is older than
``max_frame_age_s`` when its detection ends (the loop fell behind), the frame is written
black (``failure_policy = "blank"``) or not at all (``"drop"``). The write calls sit after
the redaction on the only path that reaches them: a raw frame is never written.

An image of a ``file:`` folder (``Frame.still``) is an independent picture: it gets the
full search of its main frame and is written at once, and nothing found in it carries to
the next image or from the one before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np

from edgeguard.camera import masks, video
from edgeguard.camera.bracket import Bracket, Held
from edgeguard.camera.search import FrameSearch
from edgeguard.camera.sources import Frame
from edgeguard.camera.stats import Stats
from edgeguard.camera.stills import Stills
from edgeguard.camera.tracker import Tracker
from edgeguard.config import Config
from edgeguard.errors import DetectionError, RedactionError
from edgeguard.geometry import Box, Detection, Region
from edgeguard.redact import redact, region_for

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """What the lores search needs of a detector: RGB uint8 in, detections in its pixels out."""

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


class _WholeView:
    """The lores frame's whole-frame view alone, through the pipeline's own calls (level 0
    of the frame's plan; no copy of the detector)."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        plan = self._pipe.frame_plan(w, h, min_face=self._pipe.detector.params.plan.min_face)
        return list(self._pipe.search_levels(rgb, plan[:1]))


def lores_detector(pipe: Any, search: str) -> Detector:
    """The lores detector over the pipeline's interpreters (no new interpreter): ``full``
    is the pipeline's own multi-scale detector, ``whole`` its whole-frame view alone."""
    if search == "full":
        return pipe.detector
    if search != "whole":
        raise ValueError(f"lores_search {search!r}: expected full or whole")
    return _WholeView(pipe)


class _Late(Exception):
    """The frame is older than the age bound after detection (the loop fell behind)."""


@dataclasses.dataclass(eq=False)
class FramePath:
    """Search, hold, redact and write each frame; see the module docstring."""

    cfg: Config
    pipe: Any  # the pipeline (None in tests that give a detector)
    detector: Detector  # the lores search
    frame_search: FrameSearch | None  # the main-resolution search (camera.search = "main")
    writer: video.ThreadedWriter | None
    stats: Stats
    behind: Callable[[], bool]  # frames wait behind this one (a live camera's queue)
    clock: Callable[[], float]
    stills: Stills | None = None

    def __post_init__(self) -> None:
        c = self.cfg.camera
        # A face is kept for persist_s of *searched* frames: with fewer searches a face is
        # found less often (a small fast face may go unfound for a second of searches).
        self.tracker = Tracker(persist_s=c.persist_s * c.search_every)
        # delay_frames searched frames, the unsearched ones between, and 2 s more at most
        self.bracket = Bracket(c.delay_frames,
                               max_held=(c.delay_frames + 1) * c.search_every + round(2 * c.fps))
        self._unsearched = c.search_every  # frames since the last search (the first is)
        self._last_index: int | None = None
        self._last_shape: tuple[int, ...] | None = None
        self._error_logged: set[str] = set()

    def reload(self, cfg: Config, pipe: Any, *, own_detector: bool) -> None:
        """A reloaded configuration and pipeline (or None: the same) from the next frame."""
        self.cfg = cfg
        if pipe is not None and pipe is not self.pipe:
            self.pipe = pipe
            if own_detector:
                self.detector = lores_detector(pipe, cfg.camera.lores_search)
                if self.frame_search is not None:
                    self.frame_search.pipe = pipe  # the new [detect] from the next frame
                    self.frame_search.reset()  # its plan is made again

    def __call__(self, frame: Frame) -> None:
        """One frame, one error boundary. Whatever fails, no raw pixel is written."""
        c = self.cfg.camera
        t_start = self.clock()
        missed = 0
        if self._last_index is not None and frame.index > self._last_index + 1:
            missed = frame.index - self._last_index - 1
        self.stats.taken(missed)
        self._last_index = frame.index
        shape = frame.main.shape
        if frame.still or (self._last_shape is not None and shape != self._last_shape):
            self._restart()  # another picture: nothing carries over, in either direction
        self._last_shape = shape
        held = Held(frame, frame.t, searched=frame.still or self._search_now(),
                    size=(shape[1], shape[0]))
        try:
            boxes: list[Box] = []
            if held.searched:
                self._unsearched = 0
                t0 = self.clock()
                boxes = self._search(frame)
                held.detect_ms = (self.clock() - t0) * 1e3
            else:
                self._unsearched += 1
            age = self.clock() - frame.captured
            if age > c.max_frame_age_s:
                raise _Late(f"frame {age:.2f} s old after detection (bound "
                            f"{c.max_frame_age_s:g} s)")
            if frame.still:  # searched in full, written at once: no tracker, no bracket
                held.cover = boxes
                held.found = [(-1 - i, b, 0.0, 0.0) for i, b in enumerate(boxes)]
            elif held.searched:
                held.cover = self.tracker.update(frame.t, boxes)
                held.found = self.tracker.found_at(frame.t)
            else:
                # The searches before it (moved and grown to this time); the bracket adds
                # the faces the searches after it find.
                held.cover = self.tracker.cover(frame.t)
        except (DetectionError, RedactionError, _Late) as exc:
            held.error = str(exc)
        except Exception as exc:  # the per-frame boundary: a bug fails the frame, closed
            self._log_once(type(exc).__name__, "camera: internal error on a frame")
            held.error = f"internal error: {type(exc).__name__}: {exc}"
        if frame.still:
            self._release(held, held.cover)
        else:
            for ready, cover in self.bracket.push(held):
                self._release(ready, cover)
        views = self.frame_search.stats.views if self.frame_search is not None else None
        self.stats.handled((self.clock() - t_start) * 1e3, searched=held.searched,
                            views=views)

    def _search_now(self) -> bool:
        """Whether this frame is searched: every ``search_every`` frames, and not while
        frames wait behind it (the search takes the newest frame when it is free; the ones
        before it are covered by the searches around them, so every frame is written at
        the camera's rate). At least one frame a second of frames is searched whatever
        the queue."""
        c = self.cfg.camera
        if self._unsearched + 1 < c.search_every:
            return False
        return not self.behind() or self._unsearched + 1 >= max(c.search_every,
                                                                 round(c.fps))

    def _restart(self) -> None:
        self.finish()
        self.tracker.reset()
        if self.frame_search is not None:
            self.frame_search.reset()
        self._unsearched = self.cfg.camera.search_every  # the next frame is searched

    def finish(self) -> None:
        """Write every held frame (the end of a file, a stop, another picture). No later
        frames will bracket them: the newest gets the full search of its main frame, and
        what it finds is carried back over the others like any later detection (a face
        that walked in during the last frames may not have been swept yet). One full
        search, not one per held frame, so the last frames wait ~0.2 s more, not seconds."""
        held = self.bracket.held()
        if self.frame_search is not None and held and held[-1].error is None:
            last = held[-1]
            try:
                boxes = self.frame_search.full(last.frame.main)
            except (DetectionError, ValueError, MemoryError) as exc:
                last.error = f"detection failed: {exc}"
            else:
                last.cover.extend(boxes)
                # ids no track uses (tracks count up from 1); no velocity: carried back grown
                last.found.extend((-1 - i, b, 0.0, 0.0) for i, b in enumerate(boxes))
        for ready, cover in self.bracket.drain():
            self._release(ready, cover)

    def _release(self, held: Held, cover: list[Box]) -> None:
        """Redact and write one frame the bracket released."""
        frame = held.frame
        # Stills are decided here, on the frame being written (a snap gets the frame
        # written next, captured up to the bracket's delay before it was asked for).
        want_still = self.stills is not None and self.stills.due(frame.t)
        if held.error is not None:
            self._failure(frame, held.error)
            return
        raw: np.ndarray | None = None
        try:
            if want_still:
                raw = frame.main.copy()
            self.redact(frame.main, cover)
            self.mask(frame.main)
        except RedactionError as exc:
            self._failure(frame, str(exc))
            return
        except Exception as exc:  # the per-frame boundary, as in __call__
            self._log_once(type(exc).__name__, "camera: internal error redacting a frame")
            self._failure(frame, f"internal error: {type(exc).__name__}: {exc}")
            return
        # Only a redacted frame reaches this point.
        if self.writer is not None:
            self.writer.write(frame.main, frame.t)
        if raw is not None and self.stills is not None:
            self.stills.offer(raw, cover, frame.index)
        self.stats.written(faces=len(held.found),
                            detect_ms=held.detect_ms if held.searched else None,
                            now=self.clock(), captured=frame.captured)

    def _search(self, frame: Frame) -> list[Box]:
        """This frame's faces in main pixels: the main-resolution search, or the lores
        search alone (``camera.search``)."""
        if self.frame_search is None:
            return self._detect(frame)
        try:
            if frame.still:
                return self.frame_search.full(frame.main)
            return self.frame_search(frame.main, frame.lores, self.tracker.cover(frame.t))
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc

    def _detect(self, frame: Frame) -> list[Box]:
        """Faces on the lores frame, as boxes in main pixels."""
        main_h, main_w = frame.main.shape[:2]
        lores = frame.lores
        h, w = lores.shape[:2]
        # Undo an ISP stretch (lores of another aspect ratio): faces keep their proportions.
        true_w = round(h * main_w / main_h)
        if abs(true_w - w) > 1:
            lores = cv2.resize(lores, (true_w, h), interpolation=cv2.INTER_LINEAR)
            w = true_w
        try:
            dets = self.detector.detect(lores)
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc
        sx, sy = main_w / w, main_h / h
        return [Box(d.box.x1 * sx, d.box.y1 * sy, d.box.x2 * sx, d.box.y2 * sy) for d in dets]

    def redact(self, rgb: np.ndarray, boxes: Sequence[Box],
               extra: Sequence[Region] = ()) -> None:
        """Face boxes (expanded by ``[redact]``) and exact regions, through the pipeline
        when there is one (the regions are made in one place)."""
        pipe = self.pipe
        if pipe is not None and hasattr(pipe, "redact_boxes") \
                and pipe.cfg.redact == self.cfg.redact:
            pipe.redact_boxes(rgb, boxes, extra)
            return
        h, w = rgb.shape[:2]
        rc = self.cfg.redact
        regions = [r for r in (region_for(b, expand=rc.expand, width=w, height=h)
                               for b in boxes) if r is not None]
        redact(rgb, [*regions, *extra], mode=rc.mode, shape=rc.shape, color=rc.color,
               outline=rc.outline)

    def mask(self, rgb: np.ndarray) -> None:
        """The privacy masks (``camera.masks``), over whatever the search found."""
        if self.cfg.camera.masks:
            rc = self.cfg.redact
            masks.apply(rgb, self.cfg.camera.masks, mode=rc.mode, color=rc.color)

    def _failure(self, frame: Frame, reason: str) -> None:
        blank = self.cfg.camera.failure_policy == "blank"
        self.stats.failure(reason, blanked=blank)
        if reason not in self._error_logged:
            self._error_logged.add(reason)
            logger.warning("camera: frame %d %s: %s", frame.index,
                           "blanked" if blank else "dropped", reason)
        if blank and self.writer is not None:
            self.writer.blank(frame.t)
        # The raw frame goes with the Frame object: nothing else holds it.

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._error_logged:
            self._error_logged.add(key)
            logger.exception(message)
