"""One frozen, typed configuration, loaded from TOML.

Every section is a frozen dataclass; every field has a type, a default and, where it
matters, bounds or choices in its metadata (:mod:`.schema`). Unknown sections or keys, wrong
types and out-of-range values are ``ConfigError``s that name the file and the key
(:mod:`.loading`). Command-line flags override the file through :func:`override`.
"""

from edgeguard.config.loading import from_dict, load, override, reference
from edgeguard.config.schema import (
    CAMERA_FRAME_SEARCHES,
    CAMERA_POLICIES,
    CAMERA_SEARCHES,
    OUTPUT_FORMATS,
    RUNTIMES,
    SECOND_MODELS,
    SECTIONS,
    VIDEO_AUDIO,
    VIDEO_FORMATS,
    VIDEO_PRESETS,
    CameraConfig,
    Config,
    DaemonConfig,
    DetectConfig,
    InputConfig,
    Mode,
    OutputConfig,
    RedactConfig,
    Shape,
    VideoConfig,
    WebConfig,
)

__all__ = [
    "CAMERA_FRAME_SEARCHES", "CAMERA_POLICIES", "CAMERA_SEARCHES", "OUTPUT_FORMATS", "RUNTIMES",
    "SECOND_MODELS", "SECTIONS", "VIDEO_AUDIO", "VIDEO_FORMATS", "VIDEO_PRESETS",
    "CameraConfig", "Config", "DaemonConfig", "DetectConfig", "InputConfig", "Mode",
    "OutputConfig", "RedactConfig", "Shape", "VideoConfig", "WebConfig",
    "from_dict", "load", "override", "reference",
]
