"""The camera appliance: capture, search main-resolution pixels, redact, store only redacted
output.

- :mod:`edgeguard.sources.camera`: the adapters, one module each (picamera2, V4L2 through
  OpenCV, a file or folder played as a camera) behind one
  :class:`~edgeguard.sources.camera.base.Source` interface; each hardware library is
  imported lazily inside its adapter, never at import. :mod:`edgeguard.camera.sources`
  chooses one (none, auto, a spec) and re-exports them.
- :mod:`edgeguard.camera.capture`: the reader thread and its short in-memory queue.
- :mod:`edgeguard.camera.search`: which main-resolution pixels a frame searches (motion,
  tracked faces, the whole-frame view, a sweep slice), through the pipeline's calls.
- :mod:`edgeguard.camera.tracker`: temporal safety, pure: regions outlive a missed detection
  and follow the face's motion.
- :mod:`edgeguard.camera.bracket`: a frame is written once the searches after it are known;
  faces found later are carried back. Pure.
- :mod:`edgeguard.camera.masks`: privacy masks, fixed polygons always redacted.
- :mod:`edgeguard.camera.video`: redacted video segments, atomic publication, disk quota.
- :mod:`edgeguard.camera.frames`: one frame's way (search or not, tracker, bracket,
  redaction, video writer); :mod:`edgeguard.camera.stills`: when a still is due and its
  worker; :mod:`edgeguard.camera.stats`: counts and timings.
- :mod:`edgeguard.camera.loop`: :class:`~edgeguard.camera.loop.CameraService`, the threads
  that compose them (start / stop / snap / status).

Camera frames stay in memory; only redacted stills and video reach the outbox.
"""

from __future__ import annotations
