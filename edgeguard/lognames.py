"""File names in log lines: printable, or kept out altogether (``daemon.hide_filenames``).

Shared by the daemon and the upload page, so both show and hide names the same way.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

HIDDEN = "(name hidden)"


def printable(name: str) -> str:
    """A file name fit for one log line: control characters (a newline in a name could
    forge a log line) and bytes that are not UTF-8 are shown as escapes."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in name)


def shown(name: str, *, hide: bool) -> str:
    """``name`` as a log line shows it: :data:`HIDDEN` when names are to stay out."""
    return HIDDEN if hide else printable(name)


class Namer:
    """Names for the inputs under ``root`` and the outputs under ``outbox``.

    With ``hide`` set, an input is logged as ``file#`` and a keyed hash of its name (the
    same name gives the same token for this process's life, so its lines can be followed);
    ``hide`` may change while running (a reload).
    """

    def __init__(self, root: Path, outbox: Path, *, hide: bool) -> None:
        self.root = root
        self.outbox = outbox
        self.hide = hide
        self._salt = secrets.token_bytes(16)

    def name(self, path: Path) -> str:
        rel = self.rel_text(path)
        if self.hide:
            return "file#" + hashlib.blake2s(rel.encode(errors="surrogateescape"),
                                             key=self._salt, digest_size=4).hexdigest()
        return printable(rel)

    def out_name(self, path: Path) -> str:
        try:
            return shown(str(path.relative_to(self.outbox)), hide=self.hide)
        except ValueError:
            return shown(str(path), hide=self.hide)

    def scrub(self, text: str, path: Path) -> str:
        """``text`` without the file's name, when names are to stay out of the logs."""
        if not self.hide:
            return text
        token = self.name(path)
        for form in sorted({str(path), self.rel_text(path), path.name}, key=len,
                           reverse=True):
            if form:
                text = text.replace(form, token)
        return text

    def rel_text(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
