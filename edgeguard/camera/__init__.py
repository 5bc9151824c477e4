"""The camera appliance: capture, detect on the reduced stream, redact, store only redacted output.

- :mod:`edgeguard.camera.sources`: one :class:`~edgeguard.camera.sources.Source` interface and
  its adapters (picamera2, V4L2 through OpenCV, a file or folder played as a camera, none,
  auto). Each hardware library is imported lazily inside its adapter, never at import.
- :mod:`edgeguard.camera.tracker`: temporal safety, pure: regions outlive a missed detection
  and follow the face's motion.
- :mod:`edgeguard.camera.video`: redacted video segments, atomic publication, disk quota.
- :mod:`edgeguard.camera.loop`: :class:`~edgeguard.camera.loop.CameraService`, the thread
  that composes them (start / stop / snap / status).

Camera frames stay in memory; only redacted stills and video reach the outbox.
"""

from __future__ import annotations
