"""Helpers for tests/test_web.py: the real web process and a headless Chromium."""
