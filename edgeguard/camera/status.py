"""The camera's lines in `edgeguard status`, from the ``camera`` dict of the state file.

Kept apart from the loop so `edgeguard status` does not import OpenCV or the camera code.
"""

from __future__ import annotations

from typing import Any


def render_status(cam: dict[str, Any]) -> str:
    """The camera line(s) for `edgeguard status`."""
    if not cam or cam.get("state") == "off":
        return f"camera: off ({cam.get('source', 'none') if cam else 'none'})"

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"camera: {cam.get('camera')} {cam.get('state')}, "
             f"{num(cam.get('fps'), '.1f')} fps, detection {num(cam.get('detect_ms'), '.0f')} "
             f"ms/frame (p95 {num(cam.get('detect_ms_p95'), '.0f')})"
             + (f", {num(cam.get('views_per_frame'), '.1f')} views/frame"
                if cam.get("views_per_frame") is not None else "")
             + (f", added latency {num(cam.get('latency_ms'), '.0f')} ms (max "
                f"{num(cam.get('latency_ms_max'), '.0f')})"
                if cam.get("latency_ms") is not None else "")]
    lines.append(f"camera frames {cam.get('frames', 0)}"
                 + (f" (searched {cam['searched']})" if "searched" in cam else "")
                 + f", failed {cam.get('failed', 0)} "
                 f"(blanked {cam.get('blanked', 0)}, dropped {cam.get('dropped', 0)}), "
                 f"missed {cam.get('missed', 0)}; stills {cam.get('stills', 0)}"
                 + (f", video segments {cam['video_segments']}"
                    if "video_segments" in cam else ""))
    for i, poly in enumerate(cam.get("masks") or []):
        pts = " ".join(f"{x},{y}" for x, y in poly)
        lines.append(f"camera privacy mask {i}: {pts} (always redacted)")
    if cam.get("last_error"):
        lines.append(f"camera last error: {cam['last_error']}")
    return "\n".join(lines)
