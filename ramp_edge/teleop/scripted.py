"""Scripted teleop devices for the simulated robot: the scripted expert and the scripted corrector
(:mod:`firmware_bridge.sim`) behind the same interface as a person's leader arm or gamepad.

Each reading fetches the emulator's privileged scene state over its sim-control channel
(:class:`~firmware_bridge.emulator.sim_link.SimClient`, ``{"cmd": "state"}``), rebuilds the
episode locally from task and seed (:func:`~firmware_bridge.sim.tasks.make_episode` is
deterministic) and asks the script what a person would do:

``scripted+expert://?sim=<sim URL, urlencoded>&task=pack_box&seed=0&noise=0&failure_rate=0``
    Always engaged: it demonstrates the whole task. ``target`` = ``ScriptedExpert.act(state)``.
    ``noise`` is the expert's ``action_noise_rad`` (rad), ``failure_rate`` its deliberate
    failure probability (0..1), ``expert_seed`` the seed of those draws.

``scripted+corrector://?sim=...&task=pack_box&seed=0&reaction_delay_steps=10&stall_steps=300``
    Engaged while the corrector wants control (``target`` = ``ScriptedCorrector.act(state)``,
    ``reason`` = what it noticed, e.g. ``"stall"``); disengaged otherwise (``target`` None).
    Also takes ``drift_m``, ``fall_horizon_s``, ``max_control_steps``, ``cooldown_steps``
    (see :class:`~firmware_bridge.sim.corrector.CorrectorConfig`).

Both take ``timeout_ms`` (the sim-control reply timeout, default 250). Percent-encode the sim
URL (:func:`scripted_url` does it); a literal ``+`` is kept, never read as a space. Readings run
at the task's control rate (50 Hz): the scripts count control steps.

Coordinates: :class:`~firmware_bridge.sim.state.SimState` joint positions, and so the targets,
are the motor controller's *raw* coordinates. With the emulator's default calibration (homing
offset 0, drive sign +1) they equal the controller's joint coordinates, which these devices
assume; a calibrated robot would need the calibration applied here first.

Episodes: the device checks, once per episode, that the emulator runs the same task and seed
(sim status) and publishes disengaged samples saying so until it does. Reset the emulator
first, then call :meth:`~ramp_edge.teleop.base.TeleopDevice.reset_episode` with the same seed.
"""

from __future__ import annotations

import math
import time
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from firmware_bridge.emulator.sim_link import SimClient, SimLinkError
from firmware_bridge.errors import TransportUrlError
from firmware_bridge.sim.corrector import CorrectorConfig, ScriptedCorrector
from firmware_bridge.sim.errors import UnknownTaskError
from firmware_bridge.sim.expert import ExpertConfig, ScriptedExpert
from firmware_bridge.sim.state import SimState
from firmware_bridge.sim.tasks import Episode, make_episode
from firmware_bridge.transport.zmq_link import zmq_endpoint
from ramp_edge.teleop.base import (
    TeleopDevice,
    TeleopError,
    TeleopSample,
    TeleopTransientError,
    TeleopUrlError,
)

if TYPE_CHECKING:
    import mujoco

DEFAULT_TASK = "pack_box"
DEFAULT_TIMEOUT_MS = 250.0

# URL parameter -> config field, per device (data, not code). Types come from the config class.
EXPERT_PARAMS: dict[str, str] = {
    "noise": "action_noise_rad",
    "failure_rate": "failure_rate",
    "expert_seed": "seed",
}
CORRECTOR_PARAMS: dict[str, str] = {
    name: name
    for name in ("stall_steps", "drift_m", "fall_horizon_s", "reaction_delay_steps",
                 "max_control_steps", "cooldown_steps")
}
# Parameters every scripted device takes, with their defaults (None: required).
COMMON_PARAMS: dict[str, str | None] = {
    "sim": None, "task": DEFAULT_TASK, "seed": "0", "timeout_ms": str(DEFAULT_TIMEOUT_MS),
}


def scripted_url(kind: str, sim_url: str, **params: object) -> str:
    """Build ``scripted+<kind>://?sim=...&...`` with every value percent-encoded.

    >>> scripted_url("expert", "zmq+ipc:///tmp/sim.sock", seed=3)
    'scripted+expert://?sim=zmq%2Bipc%3A%2F%2F%2Ftmp%2Fsim.sock&seed=3'
    """
    query = "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}"
                     for k, v in {"sim": sim_url, **params}.items())
    return f"scripted+{kind}://?{query}"


def parse_query(url: str) -> dict[str, str]:
    """The query of a teleop URL as a dict. Raises :class:`TeleopUrlError` for a host or path
    (scripted devices have neither), a repeated key or a key without ``=``."""
    parts = urlsplit(url)
    if parts.netloc or parts.path or parts.fragment:
        raise TeleopUrlError(f"{url}: a scripted teleop URL has only a query "
                             "(scripted+expert://?sim=...&task=...)")
    out: dict[str, str] = {}
    for item in filter(None, parts.query.split("&")):
        key, eq, value = item.partition("=")
        key = unquote(key)
        if not eq:
            raise TeleopUrlError(f"{url}: parameter {key!r} has no value")
        if key in out:
            raise TeleopUrlError(f"{url}: parameter {key!r} is given twice")
        out[key] = unquote(value)  # not unquote_plus: a '+' in zmq+ipc stays a '+'
    return out


def _number(url: str, key: str, text: str, kind: type) -> int | float:
    what = "an integer" if kind is int else "a number"
    try:
        value = int(text) if kind is int else float(text)
    except ValueError as err:
        raise TeleopUrlError(f"{url}: {key}={text!r} is not {what}") from err
    if not math.isfinite(value):
        raise TeleopUrlError(f"{url}: {key}={text!r} is not finite")
    return value


def _config_kwargs(url: str, query: dict[str, str], params: Mapping[str, str],
                   cls: type) -> dict[str, Any]:
    """Config keyword arguments from the URL parameters mapped in ``params``, typed by
    ``cls``'s field annotations."""
    hints = typing.get_type_hints(cls)
    return {field: _number(url, key, query[key], hints[field])
            for key, field in params.items() if key in query}


class _ScriptedDevice(TeleopDevice):
    """Shared by the scripted devices: URL, sim client, episode, and the per-reading state."""

    kind: ClassVar[str] = ""
    params: ClassVar[Mapping[str, str]] = {}  # URL parameter -> field of config_class
    config_class: ClassVar[type] = ExpertConfig

    def __init__(self, url: str, *, model: mujoco.MjModel | None = None,
                 max_consecutive_errors: int = 5) -> None:
        query = parse_query(url)
        unknown = sorted(set(query) - set(COMMON_PARAMS) - set(self.params))
        if unknown:
            known = ", ".join(sorted({*COMMON_PARAMS, *self.params}))
            raise TeleopUrlError(f"{url}: unknown parameter(s) {', '.join(unknown)} "
                                 f"(known: {known})")
        opts = {k: query.get(k, default) for k, default in COMMON_PARAMS.items()}
        if not opts["sim"]:
            raise TeleopUrlError(f"{url}: sim=<the emulator's sim-control URL> is required")
        try:
            zmq_endpoint(opts["sim"])
        except TransportUrlError as err:
            raise TeleopUrlError(f"{url}: sim: {err}") from err
        seed = int(_number(url, "seed", str(opts["seed"]), int))
        timeout_ms = float(_number(url, "timeout_ms", str(opts["timeout_ms"]), float))
        if timeout_ms <= 0:
            raise TeleopUrlError(f"{url}: timeout_ms must be > 0")
        kwargs = _config_kwargs(url, query, self.params, self.config_class)
        try:
            self.config = self.config_class(**kwargs)
            episode = make_episode(str(opts["task"]), seed)
        except (ValueError, UnknownTaskError) as err:
            raise TeleopUrlError(f"{url}: {err}") from err
        super().__init__(f"scripted-{self.kind}", url, rate_hz=episode.control_hz,
                         max_consecutive_errors=max_consecutive_errors)
        self.sim_url = str(opts["sim"])
        self.episode = episode
        self._checked = False  # whether the emulator was seen running this episode
        try:
            self._build(episode, model)  # raises SimUnavailableError without MuJoCo
            self._client = SimClient(self.sim_url, timeout_s=timeout_ms / 1000)
        except BaseException:
            self._closed = True  # nothing to close yet, nothing to warn about
            raise
        self.start()

    # -- for the two devices -------------------------------------------------------------------
    def _build(self, episode: Episode, model: mujoco.MjModel | None) -> None:
        raise NotImplementedError

    def _restart(self, episode: Episode) -> None:
        raise NotImplementedError

    def _act(self, t_s: float, state: SimState) -> TeleopSample:
        raise NotImplementedError

    # -- TeleopDevice ----------------------------------------------------------------------------
    def _poll(self) -> TeleopSample | None:
        try:
            if not self._checked:
                mismatch = self._episode_mismatch(self._client.status())
                if mismatch:
                    return self._disengaged(mismatch)
                self._checked = True
            reply = self._client.state()
        except SimLinkError as err:  # no answer (the request socket is replaced): try again
            raise TeleopTransientError(f"sim {self.sim_url}: {err}") from err
        t_s = time.monotonic()
        if "state" not in reply:
            raise TeleopError(f"the emulator at {self.sim_url} has no simulated scene: start it "
                              "with --plant mujoco --task ...")
        try:
            state = SimState.from_dict(reply["state"])
        except ValueError as err:
            raise TeleopError(f"sim {self.sim_url}: {err}") from err
        return self._act(t_s, state)

    def _episode_mismatch(self, status: dict[str, Any]) -> str:
        want = f"{self.episode.task} seed {self.episode.seed}"
        if status.get("task") is None:
            return f"waiting: the emulator runs no task (this device expects {want})"
        have = f"{status.get('task')} seed {status.get('seed')}"
        return "" if have == want else f"waiting: the emulator runs {have}, not {want}"

    def _reset_episode(self, *, seed: int | None = None, task: str | None = None,
                       **unknown: object) -> None:
        """Rebuild the episode from ``task`` (default: the current one) and ``seed`` (default:
        the current one) and restart the script. Raises TypeError for other keywords,
        :class:`~firmware_bridge.sim.errors.UnknownTaskError` for an unknown task."""
        if unknown:
            raise TypeError(f"reset_episode() takes seed and task, not {', '.join(unknown)}")
        episode = make_episode(self.episode.task if task is None else task,
                               self.episode.seed if seed is None else int(seed))
        if episode.control_hz != self.rate_hz:
            raise TeleopError(f"task {episode.task} runs at {episode.control_hz} Hz, this device "
                              f"at {self.rate_hz:g} Hz: open a new device")
        self.episode = episode
        self._checked = False
        self._restart(episode)

    def _close_source(self) -> None:
        self._client.close()


class ScriptedExpertDevice(_ScriptedDevice):
    """The scripted expert as a teleop device: always engaged (demonstrating).

    URL: ``scripted+expert://?sim=...&task=...&seed=...&noise=...&failure_rate=...``
    (module docstring). ``model``: a compiled scene model to share with the expert's IK (one
    is compiled if None). Raises :class:`TeleopUrlError` for a bad URL and
    :class:`~firmware_bridge.sim.errors.SimUnavailableError` without MuJoCo.
    """

    kind = "expert"
    params = EXPERT_PARAMS
    config_class = ExpertConfig

    def _build(self, episode: Episode, model: mujoco.MjModel | None) -> None:
        self.expert = ScriptedExpert(episode, self.config, model=model)

    def _restart(self, episode: Episode) -> None:
        self.expert.reset(episode)

    def _act(self, t_s: float, state: SimState) -> TeleopSample:
        return TeleopSample(t_s, True, self.expert.act(state), self.source, "demonstration")

    @property
    def done(self) -> bool:
        """Whether the expert has finished (every sub-goal holds or was given up)."""
        return self.expert.done


class ScriptedCorrectorDevice(_ScriptedDevice):
    """The scripted corrector as a teleop device: engaged while it wants control.

    URL: ``scripted+corrector://?sim=...&task=...&seed=...&reaction_delay_steps=...&...``
    (module docstring). Raises as :class:`ScriptedExpertDevice` does.
    """

    kind = "corrector"
    params = CORRECTOR_PARAMS
    config_class = CorrectorConfig

    def _build(self, episode: Episode, model: mujoco.MjModel | None) -> None:
        self.corrector = ScriptedCorrector(episode, self.config, model=model)

    def _restart(self, episode: Episode) -> None:
        self.corrector.reset(episode)

    def _act(self, t_s: float, state: SimState) -> TeleopSample:
        c = self.corrector
        if not c.observe(state):
            return TeleopSample(t_s, False, None, self.source, "")
        target: np.ndarray = c.act(state)
        return TeleopSample(t_s, True, target, self.source, c.reason or "")

    @property
    def events(self) -> list:
        """The corrector's events so far (``noticed``/``takeover``/``handback``, by step)."""
        return list(self.corrector.events)


__all__ = [
    "CORRECTOR_PARAMS",
    "EXPERT_PARAMS",
    "ScriptedCorrectorDevice",
    "ScriptedExpertDevice",
    "parse_query",
    "scripted_url",
]
