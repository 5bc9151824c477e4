"""The daemon: a bounded queue of inbox paths, a worker pool and a supervising loop.

Threads:

- watchdog's observer thread turns inotify events into :meth:`WorkQueue.offer` calls
  (never blocking: when the queue is full the hint is dropped and the file waits in the
  inbox, which is the real queue, until a rescan finds it) and :class:`Settler` updates;
- ``workers`` threads (:mod:`.workers`) take a path each and run it through
  :meth:`ItemHandler.handle <edgeguard.daemon.items.ItemHandler.handle>`, the one per-item
  error boundary;
- the main thread supervises (:mod:`.supervisor`): settled files, periodic and refill
  rescans (:mod:`.intake`), pruning failed/, the state file, sd_notify (READY, STATUS,
  WATCHDOG, RELOADING, STOPPING), SIGHUP reloads (:mod:`.reload`) and the drain on
  SIGTERM/SIGINT (:mod:`.core`).

An item ends in exactly one of: an output in the outbox and the input deleted; the input
moved to failed/ with a reason; or the input left queued in the spool for a later pass
(outbox not writable, the file still being written or changed while it was read). Arrivals
are claimed from the shared inbox into the private spool first (:mod:`edgeguard.sources.spool`);
the spool is the queue, rescanned at start. See
:mod:`edgeguard.sinks.journal` for how a crash between publishing and deleting is settled.
"""

from .core import Companion, Daemon
from .ends import Endings, ItemOutcome
from .items import ItemHandler, Processor
from .reload import RESTART_ONLY, config_changes, plan_reload
from .supervisor import Supervisor
from .workqueue import Backoff, Control, WorkQueue

__all__ = ["RESTART_ONLY", "Backoff", "Companion", "Control", "Daemon", "Endings", "ItemHandler",
           "ItemOutcome", "Processor", "Supervisor", "WorkQueue", "config_changes",
           "plan_reload"]
