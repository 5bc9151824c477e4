"""How an item ends, apart from how it is processed: the fail-closed record in failed/,
the pause while the outbox (or failed/) cannot take files, and the input leaving the spool
after its delivery. Each returns (or follows) the item's :class:`ItemOutcome`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from edgeguard import service
from edgeguard.lognames import Namer, printable
from edgeguard.sinks.failed import FailedSink
from edgeguard.sinks.journal import Identity
from edgeguard.sinks.outbox import Delivery, Outbox
from edgeguard.state import Stats

from .workqueue import Backoff, WorkQueue

logger = logging.getLogger(__name__)


class ItemOutcome(Enum):
    DONE = "done"  # output published, input deleted
    FAILED = "failed"  # input moved to failed/ with a reason
    GONE = "gone"  # the input vanished (or was a folder) before it was read
    DEFERRED = "deferred"  # still open for writing, or changed while read: settle again
    BLOCKED = "blocked"  # the outbox or failed/ cannot take it now: retry with backoff


class Endings:
    """``queue`` hears of files to rescan for after a pause; ``wake`` hurries the
    supervisor when the outbox works again."""

    def __init__(self, *, root: Path, namer: Namer, outbox: Outbox, failed: FailedSink,
                 stats: Stats, queue: WorkQueue, backoff: Backoff, wake: Callable[[], None],
                 notify: service.Notify = service.notify) -> None:
        self.root = root
        self.namer = namer
        self.outbox = outbox
        self.failed = failed
        self.stats = stats
        self.queue = queue
        self.backoff = backoff
        self._wake = wake
        self._notify = notify
        # Delivered inputs whose deletion failed: never redo them (a second output).
        self.delivered: set[Identity] = set()

    def completed(self, path: Path, identity: Identity, delivery: Delivery) -> None:
        """After a delivery: the outbox works again; the input leaves the spool (a failure
        to remove it is remembered, so it is not redone)."""
        if self.backoff.success():
            logger.warning("outbox writable again; resuming")
            self._wake()
        try:
            self.outbox.complete(delivery)
        except OSError as exc:
            self.delivered.add(identity)
            logger.error("%s was delivered but cannot be removed from the inbox (%s); "
                         "it will not be redone", self.namer.name(path), exc.strerror)

    def retry_delete(self, path: Path, st: os.stat_result) -> ItemOutcome:
        identity = Identity.of(st)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.debug("still cannot remove a delivered input: %s", exc.strerror)
            return ItemOutcome.BLOCKED
        self.delivered.discard(identity)
        return ItemOutcome.DONE

    def fail(self, path: Path, reason: str, *, refused: bool = False) -> ItemOutcome:
        """Fail closed: nothing to the outbox; the raw file to failed/ with its reason."""
        try:
            rel = path.relative_to(self.root)
            kept = self.failed.record(path, rel, reason)
        except FileNotFoundError:
            if not os.path.lexists(path):
                return ItemOutcome.GONE
            return self.blocked(path, "failed/ cannot take a file: folder missing")
        except OSError as exc:
            return self.blocked(path, f"failed/ cannot take a file: {exc.strerror or exc}")
        hide = self.namer.hide
        shown = self.namer.scrub(reason, path)
        self.stats.failure(self.namer.name(path), shown, refused=refused,
                           listed=None if hide else rel.as_posix())
        # Where it is now: the operator fixes it there (only the folder when names are hidden).
        where = self.failed.root if hide else kept.path
        logger.warning("%s moved to %s: %s", self.namer.name(path), printable(str(where)),
                       shown)
        return ItemOutcome.FAILED

    def blocked(self, path: Path, reason: str) -> ItemOutcome:
        """The input stays queued (in the spool); all work pauses, retried with backoff."""
        pause, first = self.backoff.failure()
        reason = self.namer.scrub(reason, path)
        self.stats.error(reason)
        if first:
            logger.error("%s; %s stays queued, retrying in %.0f s (up to every %.0f s)",
                         reason, self.namer.name(path), pause, self.backoff.cap_s)
            self._notify(f"STATUS={reason}; retrying")
        else:
            logger.debug("%s; retrying in %.0f s", reason, pause)
        # The path is released; the rescan that follows the pause finds it again.
        self.queue.ask_rescan()
        return ItemOutcome.BLOCKED
