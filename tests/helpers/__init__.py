"""Test helpers: a real daemon process, a real sd_notify socket, tmpfs folders."""
