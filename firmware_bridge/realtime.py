"""Real-time scheduling for the one thread that keeps time (the controller's control thread,
the emulator's servo loop): SCHED_FIFO while it runs, back to what it was afterwards.

Only that thread: threads it starts later inherit its policy, so it is raised after they have
started (inference, disk and camera threads stay SCHED_OTHER; a real-time inference thread could
starve the system). Without the privilege (``LimitRTPRIO`` under systemd, CAP_SYS_NICE, or root)
the thread runs at normal priority and the reason is reported; nothing fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: At most 50: above it sit a PREEMPT_RT kernel's IRQ threads (the USB serial one included).
DEFAULT_PRIORITY = 50


@contextlib.contextmanager
def realtime_thread(priority: int = DEFAULT_PRIORITY, what: str = "control thread"
                    ) -> Iterator[str | None]:
    """Run the calling thread under SCHED_FIFO at ``priority`` (0: leave it alone). Yields None
    when raised, else why not; restores the previous policy on exit."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        yield "real-time priority off" if priority <= 0 else "no SCHED_FIFO on this platform"
        return
    try:
        before = os.sched_getscheduler(0)
        before_param = os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as err:
        why = f"{what} at normal priority: SCHED_FIFO {priority} refused ({err.strerror})"
        log.info("%s", why)
        yield why
        return
    log.info("%s runs SCHED_FIFO %d", what, priority)
    try:
        yield None
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, before, before_param)
