"""Export one episode to an MCAP file that Foxglove opens as is: JSON-schema channels, so no
protobuf or ROS definitions are needed.

Channels:

- ``/joint_states`` (``ramp_edge.JointState``): one message per control step: joint names,
  position, velocity, command (rad, rad/s; ``null`` where the device did not answer), control
  source, chunk id, world-model value, advantage indicator, safety interventions, transition.
- ``/camera/<name>/compressed`` (``foxglove.CompressedImage``): every stored frame, as recorded
  (JPEG bytes, base64 as the schema requires), ``frame_id`` the camera name.
- ``/events`` (``ramp_edge.EpisodeEvent``): takeover start/end, faults, e-stop, bundle swaps.

The episode's metadata (instruction, operator, hashes, outcome, ...) is the metadata record
``episode``. Log times are wall-clock ns: monotonic times shifted by the episode's
``started_at`` - ``t0_monotonic_s``.
"""

from __future__ import annotations

import base64
import heapq
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ramp_edge import __version__
from ramp_edge.episodes.reader import EpisodeReader, open_episode
from ramp_edge.errors import EdgeError

JOINT_STATES_TOPIC = "/joint_states"
EVENTS_TOPIC = "/events"


class ExportError(EdgeError, RuntimeError):
    """An episode cannot be exported (missing export dependency, inconsistent episodes,
    output already there)."""


def camera_topic(camera: str) -> str:
    return f"/camera/{camera}/compressed"


_TIME = {
    "type": "object", "title": "time",
    "properties": {"sec": {"type": "integer", "minimum": 0},
                   "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}},
}
_NUMS = {"type": "array", "items": {"type": ["number", "null"]}}

# Same fields as the schema published in github.com/foxglove/schemas (jsonschema flavour).
COMPRESSED_IMAGE_SCHEMA = {
    "title": "foxglove.CompressedImage",
    "description": "A compressed image",
    "type": "object",
    "properties": {
        "timestamp": {**_TIME, "description": "Timestamp of image"},
        "frame_id": {"type": "string", "description": "Frame of reference for the image."},
        "data": {"type": "string", "contentEncoding": "base64",
                 "description": "Compressed image data"},
        "format": {"type": "string", "description": "Image format"},
    },
}

JOINT_STATE_SCHEMA = {
    "title": "ramp_edge.JointState",
    "description": "One control step: measured joint state and the command actually sent.",
    "type": "object",
    "properties": {
        "timestamp": {**_TIME, "description": "Step deadline (wall clock)"},
        "step_id": {"type": "integer"},
        "name": {"type": "array", "items": {"type": "string"}},
        "position": {**_NUMS, "description": "rad; null: the device did not answer"},
        "velocity": {**_NUMS, "description": "rad/s; null: the device did not answer"},
        "command": {**_NUMS, "description": "rad, the setpoint sent (after safety filter)"},
        "source": {"type": "string", "description": "policy | human | hold | ramp | stop"},
        "human": {"type": "boolean"},
        "chunk_id": {"type": ["integer", "null"]},
        "value": {"type": ["number", "null"], "description": "world-model value"},
        "advantage": {"type": "integer", "description": "advantage indicator used"},
        "interventions": {"type": "integer", "description": "safety intervention flags"},
        "transition": {"type": "boolean", "description": "near a takeover boundary"},
        "lateness_ms": {"type": ["number", "null"]},
    },
}

EVENT_SCHEMA = {
    "title": "ramp_edge.EpisodeEvent",
    "description": "An episode event (takeover_start, takeover_end, fault, estop, ...)",
    "type": "object",
    "properties": {
        "timestamp": _TIME,
        "kind": {"type": "string"},
        "step_id": {"type": ["integer", "null"]},
        "detail": {"description": "the event's detail: an object, a string or null"},
    },
}


@dataclass(frozen=True)
class McapExportReport:
    """What one export wrote: message counts per topic and the file's size in bytes."""

    episode_id: str
    path: Path
    messages: dict[str, int] = field(default_factory=dict)
    bytes: int = 0


class WallClock:
    """Monotonic episode times (s) to wall-clock ns, from the episode's start record.
    Without one (a file recovered before its start was written) times stay monotonic."""

    def __init__(self, reader: EpisodeReader) -> None:
        started = _float(reader.meta.get("started_at"))
        t0 = _float(reader.meta.get("t0_monotonic_s"))
        if started is None or t0 is None:
            started, t0 = 0.0, 0.0
        self._base_ns = round(started * 1e9)
        self._t0 = t0

    def ns(self, t_s: float) -> int:
        return max(0, self._base_ns + round((t_s - self._t0) * 1e9))


def _float(v: str | None) -> float | None:
    try:
        out = float(v) if v is not None else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None


def _stamp(ns: int) -> dict[str, int]:
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _nums(row: list[float]) -> list[float | None]:
    return [None if math.isnan(x) else x for x in row]


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _import_writer():  # -> mcap.writer.Writer
    try:
        from mcap.writer import Writer
    except ImportError as err:
        raise ExportError("MCAP export needs the 'mcap' package: "
                          "pip install 'ramp-edge[export]'") from err
    return Writer


def _step_messages(reader: EpisodeReader, clock: WallClock, channel: int
                   ) -> Iterator[tuple[int, int, bytes]]:
    st = reader.steps()
    names = reader.joint_names
    pos, vel, cmd = st.position.tolist(), st.velocity.tolist(), st.command.tolist()
    value = st.value.tolist()
    lateness = st.lateness_ms.tolist()
    for i in range(len(st)):
        ns = clock.ns(float(st.t_s[i]))
        chunk = int(st.chunk_id[i])
        msg = {
            "timestamp": _stamp(ns), "step_id": int(st.id[i]), "name": names,
            "position": _nums(pos[i]), "velocity": _nums(vel[i]), "command": _nums(cmd[i]),
            "source": str(st.source[i]), "human": bool(st.human[i]),
            "chunk_id": None if chunk < 0 else chunk,
            "value": None if math.isnan(value[i]) else value[i],
            "advantage": int(st.advantage[i]), "interventions": int(st.interventions[i]),
            "transition": bool(st.transition[i]),
            "lateness_ms": None if math.isnan(lateness[i]) else lateness[i],
        }
        yield ns, channel, _dumps(msg)


def _image_messages(reader: EpisodeReader, camera: str, clock: WallClock, channel: int
                    ) -> Iterator[tuple[int, int, bytes]]:
    for im in reader.images(camera):
        ns = clock.ns(im.t_capture_s)
        yield ns, channel, _dumps({
            "timestamp": _stamp(ns), "frame_id": camera,
            "data": base64.b64encode(im.data).decode("ascii"), "format": im.format})


def _event_messages(reader: EpisodeReader, clock: WallClock, channel: int
                    ) -> Iterator[tuple[int, int, bytes]]:
    for ev in reader.events():
        ns = clock.ns(ev.t_s)
        detail = ev.detail_json()
        yield ns, channel, _dumps({"timestamp": _stamp(ns), "kind": ev.kind,
                                   "step_id": ev.step_id,
                                   "detail": detail if detail is not None else ev.detail})


def _metadata(reader: EpisodeReader) -> dict[str, str]:
    meta = {k: "" if v is None else str(v) for k, v in reader.meta.items()}
    meta.setdefault("episode_id", reader.episode_id)
    meta["exported_by"] = f"ramp-edge {__version__}"
    return meta


def export_mcap(episode_path: str | Path, out_path: str | Path) -> McapExportReport:
    """Write the episode at ``episode_path`` to the MCAP file ``out_path`` (zstd chunks, with
    indexes and statistics), messages in log-time order. The file is written next to
    ``out_path`` and renamed into place when complete. Returns what was written.

    Raises :class:`ExportError` when the ``mcap`` package is missing, and the reader's
    :class:`EpisodeStoreError` / :class:`EpisodeDamagedError` for a missing or damaged file."""
    writer_cls = _import_writer()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    counts: dict[str, int] = {}
    with open_episode(episode_path) as reader:
        clock = WallClock(reader)
        try:
            with open(tmp, "wb") as f:
                w = writer_cls(f)
                w.start(profile="", library=f"ramp-edge {__version__}")
                js = w.register_schema("ramp_edge.JointState", "jsonschema",
                                       _dumps(JOINT_STATE_SCHEMA))
                ims = w.register_schema("foxglove.CompressedImage", "jsonschema",
                                        _dumps(COMPRESSED_IMAGE_SCHEMA))
                evs = w.register_schema("ramp_edge.EpisodeEvent", "jsonschema",
                                        _dumps(EVENT_SCHEMA))
                topics = {w.register_channel(JOINT_STATES_TOPIC, "json", js): JOINT_STATES_TOPIC}
                streams = [_step_messages(reader, clock, next(iter(topics)))]
                for cam in reader.cameras():
                    ch = w.register_channel(camera_topic(cam), "json", ims)
                    topics[ch] = camera_topic(cam)
                    streams.append(_image_messages(reader, cam, clock, ch))
                ev_ch = w.register_channel(EVENTS_TOPIC, "json", evs)
                topics[ev_ch] = EVENTS_TOPIC
                streams.append(_event_messages(reader, clock, ev_ch))
                counts = dict.fromkeys(topics.values(), 0)
                seq = dict.fromkeys(topics, 0)
                # Each stream is already in time order; merge them so the file is too.
                for ns, ch, data in heapq.merge(*streams, key=lambda m: (m[0], m[1])):
                    seq[ch] += 1
                    w.add_message(ch, log_time=ns, data=data, publish_time=ns,
                                  sequence=seq[ch])
                    counts[topics[ch]] += 1
                w.add_metadata("episode", _metadata(reader))
                w.finish()
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return McapExportReport(reader.episode_id, out, counts, out.stat().st_size)


__all__ = ["COMPRESSED_IMAGE_SCHEMA", "EVENTS_TOPIC", "JOINT_STATES_TOPIC", "ExportError",
           "McapExportReport", "WallClock", "camera_topic", "export_mcap"]
