"""Action scheduler: turns the policy's action chunks into one setpoint per control step.

A chunk is ``chunk_size`` (H) actions at ``policy_hz``, computed from an observation at ``t0_s``;
action ``k`` applies at control time ``t0_s + k / policy_hz`` (seconds on the control thread's
monotonic clock). :meth:`ActionScheduler.next_command` returns, for any control time:

* the linear interpolation between the two actions around it (control rate 50..500 Hz);
* aligned by time, not by index: a chunk that arrives late starts at the action for *now*;
* across chunks, a crossfade with no jump: when a newer chunk is first used (at ``t_a``), the
  output moves from the older trajectory to the newer one with a weight going 0 -> 1 (cosine by
  default: zero slope at both ends, so no velocity jump either) until the older chunk's last
  action (at least ``min_blend_s``). An older chunk that has run out holds its last action;
* ``None`` when no chunk covers the time (none yet, or the newest one has run out): hold.

Threads: :meth:`push` runs on the inference thread, :meth:`next_command` on the control thread.
Chunks are copied into a pool of preallocated buffers; the lock is held only to hand buffer
indices over, never while copying or computing. ``next_command(t, out=...)`` allocates nothing
beyond a few Python floats and array views.

Staleness (safety layer 3): :meth:`stale_s` is how long no chunk has covered the control time;
:meth:`staleness` turns it into the loop's decision with ``stale_hold_ms``/``stale_stop_ms``.
"""

from __future__ import annotations

import enum
import math
import threading
from typing import Any, Literal

import numpy as np

from ramp_edge.config import RobotConfig
from ramp_edge.safety import ChunkRejectedError, check_chunk

__all__ = ["ActionScheduler", "Blend", "Staleness"]

Blend = Literal["cosine", "linear", "none"]

# Chunks contributing to one command at most: a newer chunk waits (pending) while this many are
# still blending, rather than cut a blend short (a cut would be a jump).
MAX_ACTIVE = 3
# Buffers: MAX_ACTIVE active + 1 pending + 2 being filled by pushes running concurrently.
POOL_SIZE = MAX_ACTIVE + 3
# Time comparisons tolerate clock rounding of this much (s).
_EPS_S = 1e-9


class Staleness(enum.Enum):
    """What the control loop should do, given how long no chunk has covered the control time."""

    FRESH = "fresh"  # a chunk covers now: send its (blended, interpolated) action
    LATE = "late"  # none, for less than stale_hold_ms: hold the last command (a hiccup)
    HOLD = "hold"  # none for stale_hold_ms or more: hold and record the control source as hold
    STOP = "stop"  # none for stale_stop_ms or more: controlled stop, leave RUNNING


class ActionScheduler:
    """Schedules action chunks onto control times; see the module docstring.

    ``n_joints``/``chunk_size`` fix the chunk shape ``(chunk_size, n_joints)``; ``policy_hz`` the
    spacing of actions; a new chunk is needed when ``replan_at_remaining`` actions or fewer
    remain. ``blend`` is the crossfade curve ("none" switches at once, for comparison),
    ``min_blend_s`` the shortest crossfade (used when the older chunk has little or nothing
    left). ``stale_hold_s``/``stale_stop_s`` are the thresholds of :meth:`staleness`.
    Raises ``ValueError`` for inconsistent arguments.
    """

    def __init__(
        self,
        n_joints: int,
        chunk_size: int,
        policy_hz: float,
        replan_at_remaining: int,
        *,
        stale_hold_s: float = 0.2,
        stale_stop_s: float = 1.0,
        blend: Blend = "cosine",
        min_blend_s: float = 0.1,
    ) -> None:
        if n_joints < 1 or chunk_size < 2:
            raise ValueError("need n_joints >= 1 and chunk_size >= 2")
        if not (math.isfinite(policy_hz) and policy_hz > 0):
            raise ValueError("policy_hz must be > 0")
        if not 0 < replan_at_remaining < chunk_size:
            raise ValueError("replan_at_remaining must be between 0 and chunk_size")
        if blend not in ("cosine", "linear", "none"):
            raise ValueError(f"blend must be 'cosine', 'linear' or 'none', not {blend!r}")
        if not 0 <= stale_hold_s <= stale_stop_s:
            raise ValueError("need 0 <= stale_hold_s <= stale_stop_s")
        if not min_blend_s >= 0:
            raise ValueError("min_blend_s must be >= 0")
        self.n_joints = n_joints
        self.chunk_size = chunk_size
        self.policy_hz = float(policy_hz)
        self.replan_at_remaining = replan_at_remaining
        self.stale_hold_s = float(stale_hold_s)
        self.stale_stop_s = float(stale_stop_s)
        self.blend: Blend = blend
        self.min_blend_s = float(min_blend_s)
        self._span_s = (chunk_size - 1) / self.policy_hz  # first to last action of a chunk
        self._lock = threading.Lock()
        # Per buffer: actions and metadata. Only the owner of an index touches its buffer: the
        # pusher while filling it, the control thread while it is pending or active.
        self._buf = np.zeros((POOL_SIZE, chunk_size, n_joints))
        self._t0 = [0.0] * POOL_SIZE
        self._id = [0] * POOL_SIZE
        self._source = [""] * POOL_SIZE
        self._t_a = [0.0] * POOL_SIZE  # time first used (blend starts)
        self._t_b = [0.0] * POOL_SIZE  # blend complete
        self._free = list(range(POOL_SIZE))
        self._pending: int | None = None
        self._active: list[int] = []  # oldest first; the newest decides coverage
        self._tmp = np.zeros(n_joints)
        self._clear_t: float | None = None
        #: Logging: the newest chunk in the last command, the one it blends from (or None), the
        #: newest chunk's weight (1.0 when not blending), its fractional action index, and the
        #: source label given at push. ``chunk_id`` is None after a None command.
        self.chunk_id: int | None = None
        self.blend_from_id: int | None = None
        self.blend_weight = 1.0
        self.action_index = 0.0
        self.source = ""
        #: Counters: accepted pushes, pushes dropped as older than the newest chunk, chunks
        #: replaced before first use, chunks that had run out before first use, rejected pushes.
        self.pushed = 0
        self.dropped_older = 0
        self.replaced_unused = 0
        self.expired_unused = 0
        self.rejected = 0

    @classmethod
    def from_config(cls, config: RobotConfig, **kwargs: Any) -> ActionScheduler:
        """A scheduler for ``config``'s joints, rates and stale thresholds (``kwargs`` override)."""
        rates, safety = config.rates, config.safety
        params: dict[str, Any] = {
            "stale_hold_s": safety.stale_hold_ms / 1000.0,
            "stale_stop_s": safety.stale_stop_ms / 1000.0,
        }
        params.update(kwargs)
        return cls(len(config.joints), rates.chunk_size, rates.policy_hz,
                   rates.replan_at_remaining, **params)

    # -- inference thread ---------------------------------------------------------------------

    def push(self, chunk_id: int, actions: Any, t0_s: float, source: str = "policy") -> bool:
        """Offer a chunk whose first action applies at control time ``t0_s`` (its observation's
        time). It is used from the first :meth:`next_command` at or after ``t0_s``.

        Returns True if accepted (it replaces a pending chunk not used yet), False if dropped
        because its ``t0_s`` is not newer than the newest chunk's. Raises
        :class:`~ramp_edge.safety.ChunkRejectedError` (safety layer 1: wrong shape, NaN/inf, a
        non-finite ``t0_s``) or when every buffer is busy; the scheduler is unchanged then.
        """
        try:
            checked = check_chunk(actions, self.n_joints, self.chunk_size)
            if not math.isfinite(t0_s):
                raise ChunkRejectedError(f"chunk t0_s is not finite: {t0_s!r}")
        except ChunkRejectedError:
            with self._lock:
                self.rejected += 1
            raise
        with self._lock:
            if not self._free:
                self.rejected += 1
                raise ChunkRejectedError("no free chunk buffer: too many concurrent pushes")
            slot = self._free.pop()
        self._buf[slot] = checked  # copied outside the lock: nobody else owns this buffer
        self._t0[slot] = float(t0_s)
        self._id[slot] = int(chunk_id)
        self._source[slot] = source
        with self._lock:
            newest = self._newest()
            if newest is not None and t0_s <= self._t0[newest]:
                self._free.append(slot)
                self.dropped_older += 1
                return False
            if self._pending is not None:
                self._free.append(self._pending)
                self.replaced_unused += 1
            self._pending = slot
            self.pushed += 1
        return True

    # -- control thread -----------------------------------------------------------------------

    def next_command(self, t_s: float, out: np.ndarray | None = None) -> np.ndarray | None:
        """The scheduled action for control time ``t_s`` (s), each joint's unit.

        Returns the blended, interpolated action (written into ``out`` if given, float64 of shape
        ``(n_joints,)``; else a new array), or None when no chunk covers ``t_s``: hold (``out``
        is then left as it was). Updates :attr:`chunk_id`, :attr:`blend_from_id`,
        :attr:`blend_weight`, :attr:`action_index` and :attr:`source` for the recorder. Call it
        from one thread (the control thread) with non-decreasing ``t_s``.
        """
        active = self._active
        if self._pending is not None or len(active) > 1:
            self._update(t_s)
        if not active or t_s > self._t0[active[-1]] + self._span_s + _EPS_S:
            self.chunk_id = None
            self.blend_from_id = None
            self.blend_weight = 1.0
            return None
        result = out if out is not None else np.empty(self.n_joints)
        self._interpolate(active[0], t_s, result)
        weight = 1.0
        for k in range(1, len(active)):
            slot = active[k]
            weight = self._weight(slot, t_s)
            tmp = self._tmp
            self._interpolate(slot, t_s, tmp)
            tmp -= result
            tmp *= weight
            result += tmp
        newest = active[-1]
        self.chunk_id = self._id[newest]
        self.blend_from_id = self._id[active[-2]] if len(active) > 1 else None
        self.blend_weight = weight
        self.action_index = (t_s - self._t0[newest]) * self.policy_hz
        self.source = self._source[newest]
        return result

    def clear(self, t_s: float | None = None) -> None:
        """Drop every chunk (on arming, after a stop or a takeover). Staleness then counts from
        ``t_s``, or is infinite until the first chunk when ``t_s`` is None. Call it from the
        control thread (the one calling :meth:`next_command`)."""
        with self._lock:
            self._free.extend(self._active)
            self._active.clear()
            if self._pending is not None:
                self._free.append(self._pending)
                self._pending = None
            self._clear_t = t_s
        self.chunk_id = None
        self.blend_from_id = None
        self.blend_weight = 1.0

    # -- either thread ------------------------------------------------------------------------

    def needs_chunk(self, t_s: float) -> bool:
        """True when the newest chunk (pending or active) has ``replan_at_remaining`` or fewer
        actions left at ``t_s`` (the current one included), or when there is none.

        It stays True until a newer chunk is pushed: the caller keeps one request in flight.
        """
        with self._lock:
            newest = self._newest()
            if newest is None:
                return True
            index = math.floor((t_s - self._t0[newest]) * self.policy_hz + 1e-6)
        return self.chunk_size - index <= self.replan_at_remaining

    def stale_s(self, t_s: float) -> float:
        """Seconds for which no chunk has covered the control time (0.0 while one does).

        Counts from the end of the newest chunk's last action, or from :meth:`clear`'s time;
        ``math.inf`` if there has been no chunk since a :meth:`clear` without a time. When it
        is 0.0, a :meth:`next_command` for the same ``t_s`` returns an action, unless a push in
        between replaced a due chunk by one that starts later.
        """
        with self._lock:
            end = -math.inf
            if self._active:
                end = self._t0[self._active[-1]] + self._span_s
            p = self._pending
            # A due pending chunk counts only where next_command would take it on.
            if p is not None and self._t0[p] <= t_s + _EPS_S and len(self._active) < MAX_ACTIVE:
                end = max(end, self._t0[p] + self._span_s)
            if end == -math.inf:
                if self._clear_t is None:
                    return math.inf
                end = self._clear_t
        return max(0.0, t_s - end)

    def staleness(self, t_s: float) -> Staleness:
        """:meth:`stale_s` against ``stale_hold_s``/``stale_stop_s``: what the loop should do."""
        stale = self.stale_s(t_s)
        if stale <= _EPS_S:
            return Staleness.FRESH
        if stale >= self.stale_stop_s:
            return Staleness.STOP
        if stale >= self.stale_hold_s:
            return Staleness.HOLD
        return Staleness.LATE

    def age_s(self, t_s: float) -> float:
        """Age of the observation behind the newest active chunk, ``t_s - t0_s`` (s); ``inf`` if
        none. For logging latency; coverage and staleness decide what to send."""
        active = self._active
        return t_s - self._t0[active[-1]] if active else math.inf

    # -- internals ----------------------------------------------------------------------------

    def _newest(self) -> int | None:
        if self._pending is not None:
            return self._pending
        return self._active[-1] if self._active else None

    def _update(self, t_s: float) -> None:
        """Activate a due pending chunk and drop chunks whose blend has ended (under the lock:
        index hand-over only)."""
        active = self._active
        with self._lock:
            p = self._pending
            if p is not None and t_s + _EPS_S >= self._t0[p] and len(active) < MAX_ACTIVE:
                self._pending = None
                if t_s > self._t0[p] + self._span_s + _EPS_S:
                    self._free.append(p)  # ran out before it was ever used
                    self.expired_unused += 1
                else:
                    self._t_a[p] = t_s
                    if not active or self.blend == "none":
                        self._t_b[p] = t_s
                    else:
                        older_end = self._t0[active[-1]] + self._span_s
                        self._t_b[p] = max(older_end, t_s + self.min_blend_s)
                    active.append(p)
            # The newest chunk whose blend is complete hides everything older.
            for k in range(len(active) - 1, 0, -1):
                if t_s >= self._t_b[active[k]]:
                    self._free.extend(active[:k])
                    del active[:k]
                    break

    def _weight(self, slot: int, t_s: float) -> float:
        t_a, t_b = self._t_a[slot], self._t_b[slot]
        if t_s >= t_b:
            return 1.0
        if t_s <= t_a:
            return 0.0
        x = (t_s - t_a) / (t_b - t_a)
        if self.blend == "linear":
            return x
        return 0.5 - 0.5 * math.cos(math.pi * x)

    def _interpolate(self, slot: int, t_s: float, out: np.ndarray) -> None:
        """Action of chunk ``slot`` at ``t_s``, linear between neighbours; the first action
        before the chunk starts, the last one after it ends."""
        actions = self._buf[slot]
        x = (t_s - self._t0[slot]) * self.policy_hz
        last = self.chunk_size - 1
        if x <= 0.0:
            out[:] = actions[0]
            return
        if x >= last:
            out[:] = actions[last]
            return
        i = int(x)
        frac = x - i
        a = actions[i]
        np.subtract(actions[i + 1], a, out=out)
        out *= frac
        out += a
