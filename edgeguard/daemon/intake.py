"""From the spool to the work queue: hints from the watcher and settler, and rescans.

The spool (files claimed from the shared inbox) is the real queue; the work queue holds
only as many of its paths as fit, and a rescan finds the rest.
"""

from __future__ import annotations

import collections.abc
import stat
import time
from pathlib import Path

from edgeguard.sources import inbox, spool

from .workqueue import WorkQueue


class Intake:
    def __init__(self, root: Path, queue: WorkQueue, settler: inbox.Settler,
                 claimer: spool.Claimer) -> None:
        self.root = root
        self.queue = queue
        self.settler = settler
        self.claimer = claimer
        self.backlog = 0  # files in the spool at the last rescan

    def hint(self, path: Path) -> None:
        """A path that looks ready (observer thread, settler): queue it unless the queue is
        full. One in flight is not dropped as a duplicate: its worker may be deferring it
        (changed while read, still open for writing) and not have let go yet, so it goes
        back to the settler and is offered again once released."""
        if not self.queue.offer(path) and self.queue.in_flight(path):
            self.settler.track(path)

    def rescan(self) -> None:
        """Queue the oldest ready inbox files that fit; settle the young ones."""
        now_ns = time.time_ns()
        stable_s = self.settler.stable_s
        self.claimer.sweep()  # what the claimer's events missed; emptied folders
        room = self.queue.room()
        self.queue.rescan_started()
        backlog = 0

        def ready() -> collections.abc.Iterator[inbox.Found]:
            nonlocal backlog
            for found in inbox.scan(self.root):
                backlog += 1
                if self.queue.known(found.path) or found.path in self.settler:
                    continue
                if (stat.S_ISREG(found.st.st_mode)
                        and inbox.is_young(found.st, now_ns, stable_s)
                        and inbox.probe_writer(found.path) is not False):
                    self.settler.track(found.path)  # maybe still being written
                    continue
                yield found

        chosen = inbox.oldest(ready(), room + 1)
        for found in chosen[:room]:
            self.queue.offer(found.path)
        if len(chosen) > room:
            self.queue.ask_rescan()
        self.backlog = backlog
