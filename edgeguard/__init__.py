"""EdgeGuard: a face-redaction appliance for Raspberry Pi and Linux."""

__version__ = "0.1.0"
