"""One exception hierarchy for everything EdgeGuard reports to a user.

Every error that can be caused by input, configuration or the environment is an
``EdgeGuardError``; its ``str()`` is a one-line, human-readable reason. Anything else
reaching a boundary is a bug and is logged with a traceback.
"""

from __future__ import annotations


class EdgeGuardError(Exception):
    """Base class: a problem a user can act on, with a one-line message."""


class ConfigError(EdgeGuardError):
    """The configuration file or a command-line override is invalid."""


class ModelError(EdgeGuardError):
    """A model file is missing, altered, or cannot be loaded."""


class RuntimeUnavailableError(ModelError):
    """Neither ai_edge_litert nor tflite_runtime can be imported."""


class InputError(EdgeGuardError):
    """An input image cannot be used (unreadable, corrupt, unsupported, too large)."""


class DecodeError(InputError):
    """The file is not a complete, decodable image."""


class UnsupportedFormatError(InputError):
    """The file is an image format EdgeGuard does not handle."""


class ImageTooLargeError(InputError):
    """The image header claims more pixels than the configured limit."""


class DetectionError(EdgeGuardError):
    """Running the detector failed."""


class RedactionError(EdgeGuardError):
    """Redaction or encoding failed; nothing is written."""


class EncodeError(RedactionError):
    """Encoding the redacted pixels (an image or a video) failed; nothing is written."""


class OutputError(EdgeGuardError):
    """The output cannot be written (disk full, read-only, permissions)."""


class StartupError(EdgeGuardError):
    """A start-up check failed (tmpfs, permissions, models, config)."""
