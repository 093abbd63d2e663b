"""Sync between robot and training host over real ZeroMQ sockets on loopback: pushing sealed
episodes, one round trip for what the host has, per-chunk hashes, the CURVE + ZAP allow-list,
malformed input, offline behaviour, retention, bundle pull and activation on a running
controller."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramp_edge.episodes.index import EpisodeIndex
from ramp_edge.sync import protocol as P
from ramp_edge.sync.client import SyncClient, pending_episodes
from ramp_edge.sync.errors import KeyFileError, SyncAuthError, SyncError
from ramp_edge.sync.faults import ChunkFaults
from ramp_edge.sync.keys import AllowList, generate_keypair, load_public, load_secret
from ramp_edge.sync.retention import RetentionPolicy, enforce
from ramp_edge.sync.server import SyncServer
from ramp_edge.sync.state import SyncState

EXE = Path(sys.executable).parent / "ramp-edge"
ROBOT = "arm-1"


# ------------------------------------------------------------------------------- helpers


class Keys:
    """Host, robot and stranger key pairs; the allow-list lists the robot only."""

    def __init__(self, base: Path) -> None:
        self.host_pub, self.host_sec = generate_keypair(base / "host")
        self.robot_pub, self.robot_sec = generate_keypair(base / "robot")
        self.stranger_pub, self.stranger_sec = generate_keypair(base / "stranger")
        self.impostor_pub, self.impostor_sec = generate_keypair(base / "impostor")
        self.allow = base / "allow"
        self.allow.mkdir()
        shutil.copy(self.robot_pub, self.allow / f"{ROBOT}.key")


def make_home(base: Path, keys: Keys) -> Path:
    """A robot home holding the robot's key pair as `ramp-edge sync keygen` leaves it."""
    home = base
    (home / "keys").mkdir(parents=True, exist_ok=True)
    for src in (keys.robot_pub, keys.robot_sec):
        shutil.copy2(src, home / "keys" / src.name)
    return home


def record(home: Path, episode_id: str, size: int, *, status: str = "sealed",
           seed: int | None = None) -> tuple[str, bytes]:
    """Write an episode file of ``size`` random bytes and list it in the index as ``status``
    (sealed files get their sha256, as sealing does). Returns (id, content)."""
    data = os.urandom(size) if seed is None else \
        hashlib.shake_256(str(seed).encode()).digest(size)
    d = home / "episodes"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{episode_id}.sqlite"
    path.write_bytes(data)
    with EpisodeIndex(home / "index.sqlite") as ix:
        ix.add(episode_id, path, started_at=time.time(), robot_id=ROBOT)
        if status != "recording":
            ix.update(episode_id, status=status, sha256=hashlib.sha256(data).hexdigest(),
                      bytes=size, outcome="success" if status == "sealed" else "aborted")
    return episode_id, data


def host_files(root: Path) -> dict[str, bytes]:
    """Every episode file the host holds, by name, and the index must list each once."""
    files = {p.name: p.read_bytes() for p in (root / "robots").rglob("*.sqlite")}
    from ramp_edge.sync.host_store import HostStore

    store = HostStore(root)
    try:
        rows = store.episodes()
    finally:
        store.close()
    assert len(rows) == len(files) == len({r["sha256"] for r in rows})
    return files


class ServerThread:
    def __init__(self, root: Path, keys: Keys, **kw: object) -> None:
        self.srv = SyncServer(root, keys.allow, load_secret(keys.host_sec),
                              "tcp://127.0.0.1:*", **kw)
        self.endpoint = self.srv.endpoint
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.srv.serve_forever, args=(self.stop,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.srv.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def server(tmp_path, keys) -> Iterator[ServerThread]:
    s = ServerThread(tmp_path / "host", keys, chunk_bytes=64 * 1024)
    yield s
    s.close()


def client_for(server: ServerThread, keys: Keys, **kw: object) -> SyncClient:
    kw.setdefault("connect_timeout_s", 10.0)
    return SyncClient(server.endpoint, load_public(keys.host_pub), load_secret(keys.robot_sec),
                      **kw)


def push(home: Path, server: ServerThread, keys: Keys, **kw: object):
    with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state, \
            client_for(server, keys, **kw) as c:
        return c.push(ix, state)


# ------------------------------------------------------------------------------- keys


def test_when_keygen_runs_expect_a_private_secret_file_and_no_silent_overwrite(tmp_path):
    pub, sec = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    pair = load_secret(sec)
    assert pair.public == load_public(pub) and len(pair.secret) == 40
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(tmp_path / "k")
    os.chmod(sec, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_secret(sec)
    assert not [p for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")]


def test_when_allow_list_changes_expect_new_robot_known_without_restart(tmp_path, keys):
    allow = AllowList(keys.allow)
    stranger = load_public(keys.stranger_pub)
    assert allow.robot_for(load_public(keys.robot_pub)) == ROBOT
    assert allow.robot_for(stranger) is None
    d = tmp_path / "allow"
    shutil.copytree(keys.allow, d)
    allow = AllowList(d)
    shutil.copy(keys.stranger_pub, d / "arm-2.key")
    (d / "bad name!.key").write_text("x")
    assert allow.robot_for(stranger) == "arm-2"
    assert any("bad name" in p for p in allow.problems)


# ------------------------------------------------------------------------------- push


def test_when_episodes_pushed_expect_byte_identical_on_host_and_resend_costs_one_round_trip(
        tmp_path, server, keys):
    home = make_home(tmp_path / "robot", keys)
    eps = dict(record(home, f"ep{i}", 150_000 + 7919 * i) for i in range(4))
    record(home, "ep-rec", 1000, status="recording")  # still recording: never travels
    record(home, "ep-abort", 70_000, status="aborted")  # sealed after a crash: travels
    rep = push(home, server, keys)
    assert rep.robot == ROBOT and sorted(rep.sent) == sorted([*eps, "ep-abort"])
    files = host_files(tmp_path / "host")
    assert "ep-rec.sqlite" not in files
    for eid, data in eps.items():
        assert files[f"{eid}.sqlite"] == data
    # The robot forgets its acks (say, sync.sqlite was lost): re-sending costs one round trip
    # per episode, no data.
    (home / "sync.sqlite").unlink()
    before = server.srv.handled
    rep = push(home, server, keys)
    assert sorted(rep.known) == sorted([*eps, "ep-abort"]) and rep.bytes_sent == 0
    assert server.srv.handled - before == 1 + len(rep.known)  # hello + one offer each
    assert len(host_files(tmp_path / "host")) == 5


def test_when_a_chunk_is_tampered_in_transit_expect_it_rejected_and_resent(
        tmp_path, server, keys):
    home = make_home(tmp_path / "robot", keys)
    _, data = record(home, "ep0", 600_000)
    faults = ChunkFaults(corrupt={1, 4})
    rep = push(home, server, keys, faults=faults)
    # A damaged chunk still in flight behind a rejected one is dropped as stale, not rejected.
    assert faults.damaged == 2 and 1 <= rep.chunks_rejected <= 2 and rep.sent == ["ep0"]
    assert host_files(tmp_path / "host")["ep0.sqlite"] == data


def test_when_the_robot_file_no_longer_matches_its_hash_expect_refused_and_others_pushed(
        tmp_path, server, keys):
    home = make_home(tmp_path / "robot", keys)
    record(home, "ep0", 100_000)
    _, good = record(home, "ep1", 100_000)
    p = home / "episodes" / "ep0.sqlite"
    p.write_bytes(b"\0" + p.read_bytes()[1:])  # damaged on disk after sealing
    rep = push(home, server, keys)
    assert rep.sent == ["ep1"] and "sha256" in rep.failed["ep0"]
    assert host_files(tmp_path / "host") == {"ep1.sqlite": good}
    with SyncState(home) as state:
        assert set(state.acked()) == {"ep1"}
    assert not list((tmp_path / "host" / "incoming").rglob("*.part"))


@pytest.mark.parametrize("who", ["no key", "wrong server key", "not on the allow-list"])
def test_when_an_unknown_client_connects_expect_refused_and_nothing_written(
        tmp_path, server, keys, who):
    home = make_home(tmp_path / "robot", keys)
    record(home, "ep0", 10_000)
    if who == "no key":
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(server.endpoint)
        s.send(P.encode("offer", t=1, sha="0" * 64, size=5, episode="x", meta={}))
        s.send(P.encode("chunk", t=1, sha="0" * 64, off=0, data=b"hello", h=P.digest(b"hello")))
        assert s.poll(1000) == 0  # never answered
        s.close()
        ctx.term()
    else:
        server_key = keys.impostor_pub if who == "wrong server key" else keys.host_pub
        robot_key = keys.robot_sec if who == "wrong server key" else keys.stranger_sec
        c = SyncClient(server.endpoint, load_public(server_key), load_secret(robot_key),
                       connect_timeout_s=1.5)
        with c, EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state, \
                pytest.raises(SyncAuthError, match="allow-list" if "allow" in who else "key"):
            c.push(ix, state)
        with SyncState(home) as state:
            assert state.acked() == {}
    root = tmp_path / "host"
    assert not [p for p in (root / "incoming").rglob("*") if p.is_file()]
    assert not [p for p in (root / "robots").rglob("*") if p.is_file()]
    assert host_files(root) == {}


def test_when_malformed_messages_arrive_expect_errors_and_the_server_still_serving(
        tmp_path, server, keys):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    pair = load_secret(keys.robot_sec)
    s.curve_serverkey = load_public(keys.host_pub)
    s.curve_publickey, s.curve_secretkey = pair.public, pair.secret
    s.connect(server.endpoint)
    bad = [
        b"", b"\xc1\xff garbage", msgpack.packb([1, 2, 3]), msgpack.packb({"op": 7}),
        P.encode("launch"), P.encode("offer", t=1, sha="zz", size=1, episode="e", meta={}),
        P.encode("offer", t=1, sha="a" * 64, size=1, episode="../../etc/passwd", meta={}),
        P.encode("offer", t=True, sha="a" * 64, size=1, episode="e", meta={}),
        P.encode("offer", t=1, sha="a" * 64, size=-5, episode="e", meta={}),
        P.encode("chunk", t=1, sha="b" * 64, off=0, data=b"x", h=b"short"),
        P.encode("chunk", t=1, sha="c" * 64, off=0, data=b"x", h=P.digest(b"x")),
        P.encode("get", t=1, bundle="d" * 64, path="../../index.sqlite", off=0, len=10),
        msgpack.packb({"op": "offer", "t": 1, "sha": "e" * 64, "size": 1, "episode": "e",
                       "meta": {"k": "v" * 20_000}}),
    ]
    for raw in bad:
        s.send(raw)
        assert s.poll(5000), f"no answer to {raw[:40]!r}"
        reply = P.decode(s.recv())
        assert reply["op"] == "error", reply
    s.send(b"\0" * (P.MAX_MESSAGE_BYTES + 1))  # over MAXMSGSIZE: libzmq drops the link
    s.close()
    ctx.term()
    assert server.srv.violations >= len(bad) - 2  # two are refusals, not malformed
    home = make_home(tmp_path / "robot", keys)
    _, data = record(home, "ep0", 50_000)
    assert push(home, server, keys).sent == ["ep0"]
    assert host_files(tmp_path / "host") == {"ep0.sqlite": data}
    assert not list((tmp_path / "host").rglob("passwd"))


def test_when_peers_speak_different_protocol_versions_expect_one_clear_error(
        tmp_path, server, keys):
    # A robot of this release and a host of another one (answering hello with version 1).
    ctx = zmq.Context()
    host_pair = load_secret(keys.host_sec)
    fake = ctx.socket(zmq.ROUTER)
    fake.linger = 0
    fake.curve_server = True
    fake.curve_publickey, fake.curve_secretkey = host_pair.public, host_pair.secret
    port = fake.bind_to_random_port("tcp://127.0.0.1")

    def answer_hello() -> None:
        if fake.poll(10_000):
            ident, _ = fake.recv_multipart()
            fake.send_multipart([ident, P.encode("hello", v=1, robot=ROBOT, chunk=1024,
                                                 window=4)])

    th = threading.Thread(target=answer_hello, daemon=True)
    th.start()
    c = SyncClient(f"tcp://127.0.0.1:{port}", load_public(keys.host_pub),
                   load_secret(keys.robot_sec), connect_timeout_s=10.0)
    with c, pytest.raises(SyncError, match="speaks sync protocol 1, this robot 2"):
        c.connect()
    th.join(timeout=10)
    fake.close()

    # A robot of the older release (chunk bytes inside the map, 32-byte sha256) and this host:
    # its chunk gets an error naming the mismatch, echoing its epoch so that it reads it.
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    pair = load_secret(keys.robot_sec)
    s.curve_serverkey = load_public(keys.host_pub)
    s.curve_publickey, s.curve_secretkey = pair.public, pair.secret
    s.connect(server.endpoint)
    data = b"old robot"
    sha = hashlib.sha256(data).hexdigest()
    replies = []
    for raw in (P.encode("hello", v=1),
                P.encode("offer", t=7, sha=sha, size=len(data), episode="e", meta={}),
                P.encode("chunk", t=7, sha=sha, off=0, data=data, h=bytes.fromhex(sha))):
        s.send(raw)
        assert s.poll(5000), f"no answer to {raw[:40]!r}"
        replies.append(P.decode(s.recv()))
    s.close()
    ctx.term()
    assert replies[0]["op"] == "hello" and replies[0]["v"] == P.VERSION == 2
    assert replies[1] == {"op": "want", "t": 7, "sha": sha, "off": 0}
    assert replies[2]["op"] == "error" and replies[2]["t"] == 7
    assert "older sync protocol" in replies[2]["reason"]
    assert host_files(tmp_path / "host") == {}


def test_when_the_host_is_offline_expect_a_clear_error_exit_1_and_nothing_lost(tmp_path, keys):
    from conftest import free_tcp_port

    home = make_home(tmp_path / "robot", keys)
    record(home, "ep0", 20_000)
    before = (home / "episodes" / "ep0.sqlite").read_bytes()
    t0 = time.monotonic()
    out = subprocess.run([str(EXE), "sync", "push", "--host",
                          f"tcp://127.0.0.1:{free_tcp_port()}", "--server-key",
                          str(keys.host_pub), "--timeout", "1"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "RAMP_EDGE_HOME": str(home)})
    assert out.returncode == 1, out.stderr
    assert "did not answer" in out.stderr and "nothing was lost" in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 30
    assert (home / "episodes" / "ep0.sqlite").read_bytes() == before
    with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state:
        assert [e.id for e in pending_episodes(ix, state)] == ["ep0"]
        assert state.runs()["push"]["ok"] is False


# ------------------------------------------------------------------------------- retention


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, keys) -> Iterator[ServerThread]:
    s = ServerThread(tmp_path_factory.mktemp("host"), keys, chunk_bytes=16 * 1024)
    yield s
    s.close()


OPS = st.lists(st.one_of(
    st.tuples(st.just("record"), st.integers(1_000, 40_000)),
    st.tuples(st.just("start_recording"), st.just(0)),
    st.tuples(st.just("push"), st.integers(1, 3)),
    st.tuples(st.just("reseal"), st.integers(0, 50)),  # an acked episode changes on disk
    st.tuples(st.just("fill"), st.integers(-60, 60)),  # other files come and go (percent)
), min_size=1, max_size=12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(ops=OPS)
def test_when_disk_fills_expect_retention_to_delete_only_acknowledged_episodes(
        tmp_path_factory, shared_server, keys, ops):
    home = make_home(tmp_path_factory.mktemp("robot"), keys)
    total = 200_000  # a small fake filesystem: episodes' real bytes plus a filler
    filler = [0]

    def usage(_p: Path) -> tuple[int, int, int]:
        used = sum(p.stat().st_size for p in (home / "episodes").glob("*.sqlite")) + filler[0]
        return total, min(used, total), max(total - used, 0)

    policy = RetentionPolicy(high_water_pct=70.0, low_water_pct=50.0)
    contents: dict[str, bytes] = {}
    n = 0
    for op, arg in ops:
        if op in ("record", "start_recording"):
            n += 1
            eid, data = record(home, f"e{n:03d}", arg or 500,
                               status="sealed" if op == "record" else "recording", seed=n)
            contents[eid] = data
        elif op == "push":
            with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state, \
                    client_for(shared_server, keys) as c:
                c.push(ix, state, limit=arg)
        elif op == "reseal" and contents:
            with EpisodeIndex(home / "index.sqlite") as ix:
                live = [e for e in ix.list("sealed")]
                if live:
                    e = live[arg % len(live)]
                    data = contents[e.id] + b"more"
                    (home / "episodes" / f"{e.id}.sqlite").write_bytes(data)
                    contents[e.id] = data
                    ix.update(e.id, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        elif op == "fill":
            filler[0] = max(0, filler[0] + arg * total // 100)
        with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state:
            acked_before = state.acked()
            shas = {e.id: e.sha256 for e in ix.list()}
            rep = enforce(home, ix, state, policy, disk_usage=usage)
            for eid in rep.deleted:  # only what the host acknowledged, with that very content
                assert acked_before.get(eid) == shas[eid]
            for e in ix.list():  # everything else is still there, byte for byte
                assert (home / "episodes" / f"{e.id}.sqlite").read_bytes() == contents[e.id]
            for e in pending_episodes(ix, state):
                assert e.id not in rep.deleted
            if rep.used_pct_before >= policy.high_water_pct and not rep.blocked:
                assert rep.used_pct_after < policy.low_water_pct
            if rep.blocked:  # stopped only because nothing deletable is left
                left = state.acked()
                assert not [e for e in ix.list() if e.status != "recording"
                            and left.get(e.id) == e.sha256]


# ------------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def built_bundles(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="bundles need torch")
    from models.reference import build_reference_bundle
    from ramp_edge.config import load_config

    base = tmp_path_factory.mktemp("bundles")
    config = load_config()
    limits = [(j.position_min, j.position_max) for j in config.joints]
    # Small images: the probe still runs on a real engine, in a fraction of the time.
    return {"seed1": build_reference_bundle(
        base / "seed1", config.joint_names, seed=1, joint_limits=limits, image_hw=(32, 32),
        camera_names=tuple(c.name for c in config.cameras), backends=("torch-eager",))}


def _pull(home: Path, server: ServerThread, keys: Keys, server_key: Path | None = None):
    from ramp_edge.sync.bundles import pull_bundles

    c = SyncClient(server.endpoint, load_public(server_key or keys.host_pub),
                   load_secret(keys.robot_sec), connect_timeout_s=3.0, reply_timeout_s=3.0)
    with c, SyncState(home) as state:
        return pull_bundles(c, home, state)


def test_when_bundles_pulled_expect_damaged_chunks_refetched_bad_ones_refused_none_activated(
        tmp_path, keys, built_bundles):
    from ramp_edge.bundle import load_bundle
    from ramp_edge.sync.bundles import activate_bundle, staged_dir

    src = built_bundles["seed1"]
    bid = load_bundle(src).sha256
    root = tmp_path / "host"
    faults = ChunkFaults(always=True)
    srv = ServerThread(root, keys, chunk_bytes=256 * 1024, faults=faults)
    try:
        srv.srv.store.publish(src)
        home = make_home(tmp_path / "robot", keys)
        # Every chunk damaged in transit: refused, nothing staged, and never activated.
        rep = _pull(home, srv, keys)
        assert rep.staged == [] and "damaged" in next(iter(rep.failed.values()))
        assert not [p for p in staged_dir(home).iterdir()]
        with pytest.raises(SyncError, match="failed verification"):
            activate_bundle(home, src)
        assert not (home / "bundles" / "active").exists()
        # A host without the pinned key (an impostor publishing the same bundle): refused.
        with pytest.raises(SyncAuthError):
            _pull(home, srv, keys, server_key=keys.impostor_pub)
        # Two chunks damaged once each: fetched again, hashes and probe pass, staged.
        faults.always, faults.corrupt, faults._count = False, {0, 3}, 0
        rep = _pull(home, srv, keys)
        assert rep.failed == {} and rep.staged == [f"reference-seed1@{bid[:12]}"]
        staged = next(staged_dir(home).iterdir())
        assert load_bundle(staged).sha256 == bid
        assert _pull(home, srv, keys).known == rep.staged  # nothing fetched twice
        # Damaged at rest on the host after publishing: the file hash catches it.
        with SyncState(home) as state:
            state.record_bundle(bid, "x", "failed", reason="forget")
        victim = next(p for p in (root / "bundles" / bid).rglob("*.pt"))
        raw = bytearray(victim.read_bytes())
        raw[100] ^= 1
        victim.write_bytes(bytes(raw))
        shutil.rmtree(staged)
        rep = _pull(home, srv, keys)
        assert rep.staged == [] and "sha256" in next(iter(rep.failed.values()))
    finally:
        srv.close()


# ------------------------------------------------------------------------------- activation


def test_when_a_staged_bundle_is_activated_on_a_running_controller_expect_switch_between_episodes(
        tmp_path):
    """One controller start (about 30 s on 2 cores, hence slow): activate waits for the next
    episode, a tampered bundle is refused, rollback goes back and moves the links back."""
    pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from models.reference import build_reference_bundle
    from ramp_edge.bundle import load_bundle
    from ramp_edge.config import load_config
    from ramp_edge.control_socket import ControlSocketError, send_command, socket_path

    home = tmp_path / "home"
    config = load_config()
    limits = [(j.position_min, j.position_max) for j in config.joints]
    cams = tuple(c.name for c in config.cameras)
    first, new = (build_reference_bundle(home / "bundles" / "staged" / f"seed{seed}",
                                         config.joint_names, seed=seed, joint_limits=limits,
                                         backends=("torch-eager",), camera_names=cams)
                  for seed in (0, 1))
    (home / "bundles" / "active").symlink_to(first)
    tampered = tmp_path / "tampered"
    shutil.copytree(new, tampered)
    victim = next(p for p in tampered.rglob("*.pt"))
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    env = {**os.environ, "RAMP_EDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)

    def model(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(EXE), "model", *args, "--json"], capture_output=True,
                              text=True, timeout=120, env=env)

    proc = subprocess.Popen([str(EXE), "run", "--episodes", "2", "--duration", "4", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if send_command(socket_path(home), {"cmd": "status"}).get("state") == "RUNNING":
                    break
            except ControlSocketError:
                pass
            time.sleep(0.1)
        bad = model("activate", str(tampered))
        assert bad.returncode == 1 and "sha256" in bad.stderr, bad.stderr
        assert (home / "bundles" / "active").resolve() == first.resolve()
        good = model("activate", str(new))
        assert good.returncode == 0, good.stderr
        assert proc.poll() is None, proc.communicate()[1]  # still running episode 1
        assert "next episode" in json.loads(good.stdout)["when"]
        assert (home / "bundles" / "active").resolve() == new.resolve()
        # Episode 1 keeps its bundle; wait for episode 2 to run on the new one, then roll back.
        while time.monotonic() < end:
            st_ = send_command(socket_path(home), {"cmd": "status"})
            if st_.get("state") == "RUNNING" and st_.get("bundle", "").startswith(
                    "reference-seed1@"):
                break
            time.sleep(0.1)
        back = model("rollback")
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout)["bundle"].startswith("reference-seed0@")
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    runs = json.loads(stdout)["per_episode"]
    assert len(runs) == 2 and runs[0]["bundle_swaps"] == []  # never mid-episode
    with EpisodeIndex(home / "index.sqlite") as ix:
        hashes = [ix.get(r["recording"]["episode_id"]).bundle_hash for r in runs]
    assert hashes == [load_bundle(first).sha256, load_bundle(new).sha256]
    assert [s["bundle"].split("@")[0] for s in runs[1]["bundle_swaps"]] == ["reference-seed0"]
    assert (home / "bundles" / "active").resolve() == first.resolve()
    assert (home / "bundles" / "previous").resolve() == new.resolve()
