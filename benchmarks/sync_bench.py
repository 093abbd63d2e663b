"""Sync throughput on loopback against a plain TCP copy and rsync of the same bytes, and the
robot's memory while it pushes a large backlog.

    .venv/bin/python benchmarks/sync_bench.py                  # 1 GiB in 64 MiB episodes
    .venv/bin/python benchmarks/sync_bench.py --total-mib 256 --backlog-gib 4
    .venv/bin/python benchmarks/sync_bench.py --compare-tree /tmp/old --rounds 3 --backlog-gib 0

``--compare-tree DIR`` (repeatable) also pushes the same episodes with the ramp-edge source
tree in DIR (say an older revision from ``git archive``), host and robot both, interleaved with
this tree's pushes and a plain copy over ``--rounds`` rounds, so a shared, noisy machine affects
all alike; medians are printed.

Three copies of the same files, each to a fresh directory on the same disk, each receiver
fsyncing every file (as the sync server does before it acknowledges):

* ``ramp-edge sync``: the host's server as a process (`ramp-edge sync serve`), this process
  pushing as the robot (CURVE encryption, sha256 per chunk and per file, SQLite bookkeeping);
* plain TCP: a receiver process writing what one socket carries (no encryption, no hashing);
* rsync: an rsync daemon on loopback (``--whole-file --fsync``; skipped with a note when rsync
  is missing);
* for reference, the ceiling CURVE alone sets: the bytes as 1 MiB CURVE messages, no hashing,
  no disk.

Memory: the robot's resident set (VmRSS) sampled every 50 ms while it pushes a backlog of
sparse synthetic sealed episodes (``--backlog-gib``; the host writes real bytes, so the disk
needs that much free space).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ramp_edge.episodes.index import EpisodeIndex  # noqa: E402
from ramp_edge.sync.client import SyncClient  # noqa: E402
from ramp_edge.sync.keys import generate_keypair, load_public, load_secret  # noqa: E402
from ramp_edge.sync.state import SyncState  # noqa: E402

EXE = Path(sys.executable).parent / "ramp-edge"
MIB = 1 << 20

RECEIVER = r"""
import os, socket, struct, sys
dst = sys.argv[1]
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
f = conn.makefile("rb", buffering=1 << 20)
while True:
    head = f.read(10)
    if len(head) < 10:
        break
    nlen, size = struct.unpack("<HQ", head)
    name = f.read(nlen).decode()
    with open(os.path.join(dst, name), "wb") as out:
        left = size
        while left:
            block = f.read(min(left, 1 << 20))
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
conn.sendall(b"ok")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_episodes(home: Path, count: int, size: int, *, sparse: bool) -> list[Path]:
    """Sealed episodes in a robot home: random bytes, or sparse zeros (no disk used)."""
    d = home / "episodes"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    with EpisodeIndex(home / "index.sqlite") as ix:
        for i in range(count):
            p = d / f"ep{i:05d}.sqlite"
            if sparse:
                with open(p, "wb") as f:
                    f.truncate(size)
                    # identical files would be stored once (content-addressed): vary a byte
                    f.write(i.to_bytes(4, "little"))
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while block := f.read(8 * MIB):
                        h.update(block)
                sha = h.hexdigest()
            else:
                h = hashlib.sha256()
                with open(p, "wb") as f:
                    left = size
                    while left:
                        block = os.urandom(min(left, 8 * MIB))
                        f.write(block)
                        h.update(block)
                        left -= len(block)
                sha = h.hexdigest()
            ix.add(p.stem, p, started_at=time.time() + i)
            ix.update(p.stem, status="sealed", sha256=sha, bytes=size)
            paths.append(p)
    return paths


class Host:
    def __init__(self, base: Path, keys: dict[str, Path], env: dict[str, str] | None = None
                 ) -> None:
        self.root = base / "host"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(EXE), "sync", "serve", "--root", str(self.root), "--allow",
             str(keys["allow"]), "--key", str(keys["host_sec"]), "--bind",
             f"tcp://127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sync server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def sync_push(home: Path, host: Host, keys: dict[str, Path], sample: bool = False) -> dict:
    samples: list[float] = []
    host_samples: list[float] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.05):
            samples.append(rss_mib())
            host_samples.append(rss_mib(host.proc.pid))

    before = rss_mib()
    t = threading.Thread(target=sampler, daemon=True)
    if sample:
        t.start()
    t0 = time.perf_counter()
    with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state, \
            SyncClient(f"tcp://127.0.0.1:{host.port}", load_public(keys["host_pub"]),
                       load_secret(keys["robot_sec"])) as c:
        rep = c.push(ix, state)
    dt = time.perf_counter() - t0
    stop.set()
    if sample:
        t.join()
    assert not rep.failed, rep.failed
    out = {"seconds": dt, "bytes": rep.bytes_sent, "episodes": len(rep.sent)}
    if sample:
        out.update(rss_before_mib=round(before, 1), rss_max_mib=round(max(samples), 1),
                   rss_end_mib=round(samples[-1], 1),
                   host_rss_max_mib=round(max(host_samples), 1))
    return out


PUSH = r"""
import json, resource, sys, time
from pathlib import Path
from ramp_edge.episodes.index import EpisodeIndex
from ramp_edge.sync.client import SyncClient
from ramp_edge.sync.keys import load_public, load_secret
from ramp_edge.sync.state import SyncState
home, port, host_pub, robot_sec = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
with EpisodeIndex(home / "index.sqlite") as ix, SyncState(home) as state, \
        SyncClient(f"tcp://127.0.0.1:{port}", load_public(host_pub), load_secret(robot_sec)) as c:
    rep = c.push(ix, state)
assert not rep.failed, rep.failed
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": rep.bytes_sent,
                  "cpu_s": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime}))
"""


def tree_push(tree: Path, home: Path, base: Path, keys: dict[str, Path]) -> dict:
    """One push of every episode in ``home`` with the source tree ``tree`` on both ends (robot
    and host processes), to a fresh host root; the robot's acks are forgotten first."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    (home / "sync.sqlite").unlink(missing_ok=True)
    host = Host(base, keys, env=env)
    try:
        host_cpu0 = cpu_seconds(host.proc.pid)
        out = subprocess.run([sys.executable, "-c", PUSH, str(home), str(host.port),
                              str(keys["host_pub"]), str(keys["robot_sec"])], env=env,
                             capture_output=True, text=True, check=True, cwd=tree)
        host_cpu_s = cpu_seconds(host.proc.pid) - host_cpu0
    finally:
        host.stop()
        shutil.rmtree(base, ignore_errors=True)
    res = json.loads(out.stdout.splitlines()[-1])
    res["host_cpu_s"] = host_cpu_s
    return res


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_trees(trees: list[Path], home: Path, paths: list[Path], base: Path,
                  keys: dict[str, Path], rounds: int) -> tuple[dict[str, list[float]],
                                                               dict[str, list[float]]]:
    """MB/s per round for each tree and for the plain copy, interleaved; and per tree the CPU
    time robot + host (all threads, CURVE included) per MiB pushed, ms: unlike MB/s, this
    hardly depends on what else the machine runs."""
    runs: dict[str, list[float]] = {str(t): [] for t in trees}
    runs["plain TCP copy"] = []
    cpu: dict[str, list[float]] = {str(t): [] for t in trees}
    for r in range(rounds):
        for t in trees:
            res = tree_push(t, home, base / f"cmp{r}", keys)
            runs[str(t)].append(res["bytes"] / res["seconds"] / 1e6)
            cpu[str(t)].append((res["cpu_s"] + res["host_cpu_s"]) * 1e3 / (res["bytes"] / MIB))
        res = plain_copy(paths, base / f"plain{r}")
        shutil.rmtree(base / f"plain{r}", ignore_errors=True)
        runs["plain TCP copy"].append(res["bytes"] / res["seconds"] / 1e6)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()),
              flush=True)
    return runs, cpu


def plain_copy(paths: list[Path], dst: Path) -> dict:
    dst.mkdir(parents=True)
    rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(dst)], stdout=subprocess.PIPE,
                          text=True)
    port = int(rx.stdout.readline())
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for p in paths:
            name = p.name.encode()
            size = p.stat().st_size
            s.sendall(len(name).to_bytes(2, "little") + size.to_bytes(8, "little") + name)
            with open(p, "rb") as f:
                s.sendfile(f)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(2) == b"ok"
    dt = time.perf_counter() - t0
    rx.wait(timeout=30)
    return {"seconds": dt, "bytes": sum(p.stat().st_size for p in paths)}


def curve_stream(paths: list[Path]) -> dict:
    """The ceiling CURVE sets: the same bytes in 1 MiB messages, DEALER to ROUTER, no hashing,
    no disk on the receiving side (two contexts, so encryption and decryption each get an I/O
    thread)."""
    import zmq

    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    rctx, sctx = zmq.Context(), zmq.Context()
    r = rctx.socket(zmq.ROUTER)
    r.curve_server, r.curve_publickey, r.curve_secretkey = True, spub, ssec
    port = r.bind_to_random_port("tcp://127.0.0.1")
    d = sctx.socket(zmq.DEALER)
    d.curve_serverkey, d.curve_publickey, d.curve_secretkey = spub, cpub, csec
    d.connect(f"tcp://127.0.0.1:{port}")
    total = sum(p.stat().st_size for p in paths)
    n = sum(-(-p.stat().st_size // MIB) for p in paths)

    def receive() -> None:
        for _ in range(n):
            r.recv_multipart(copy=False)

    t0 = time.perf_counter()
    rx = threading.Thread(target=receive)
    rx.start()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(MIB):
                d.send(block)
    rx.join()
    dt = time.perf_counter() - t0
    for sock in (d, r):
        sock.close(linger=0)
    rctx.term()
    sctx.term()
    return {"seconds": dt, "bytes": total}


def rsync_copy(src: Path, dst: Path) -> dict:
    if shutil.which("rsync") is None:
        return {"skipped": "rsync is not installed (apt-get install rsync)"}
    dst.mkdir(parents=True)
    conf = dst.parent / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\n[dst]\n"
                    f"path = {dst}\nread only = no\n")
    port = free_port()
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={port}",
                               f"--config={conf}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        t0 = time.perf_counter()
        subprocess.run(["rsync", "-rt", "--whole-file", "--fsync", f"{src}/",
                        f"rsync://127.0.0.1:{port}/dst/"], check=True)
        dt = time.perf_counter() - t0
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    return {"seconds": dt, "bytes": sum(p.stat().st_size for p in dst.iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mib", type=int, default=1024, help="bytes compared, MiB")
    ap.add_argument("--episode-mib", type=int, default=64, help="size of each episode, MiB")
    ap.add_argument("--backlog-gib", type=float, default=1.0,
                    help="sparse backlog pushed for the memory check, GiB (0: skip)")
    ap.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--compare-tree", action="append", type=Path, default=[],
                    help="another ramp-edge source tree to push with, side by side")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the tree comparison")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sync-bench-", dir=args.dir))
    try:
        keys: dict[str, Path] = {}
        keys["host_pub"], keys["host_sec"] = generate_keypair(base / "keys" / "host")
        keys["robot_pub"], keys["robot_sec"] = generate_keypair(base / "keys" / "robot")
        keys["allow"] = base / "keys" / "allow"
        keys["allow"].mkdir()
        shutil.copy(keys["robot_pub"], keys["allow"] / "bench.key")

        home = base / "robot"
        count = max(1, args.total_mib // args.episode_mib)
        paths = make_episodes(home, count, args.episode_mib * MIB, sparse=False)
        results: dict[str, dict] = {}
        host = Host(base, keys)
        try:
            results["ramp-edge sync"] = sync_push(home, host, keys)
        finally:
            host.stop()
        results["plain TCP copy"] = plain_copy(paths, base / "plain")
        results["rsync daemon"] = rsync_copy(home / "episodes", base / "rsync")
        results["CURVE stream only"] = curve_stream(paths)
        for r in results.values():
            if "seconds" in r:
                r["MB_s"] = round(r["bytes"] / r["seconds"] / 1e6, 1)
        plain = results["plain TCP copy"]["MB_s"]
        for r in results.values():
            if "MB_s" in r:
                r["vs_plain"] = round(r["MB_s"] / plain, 2)
        print(f"{count} episodes x {args.episode_mib} MiB, loopback, receivers fsync each file")
        for name, r in results.items():
            if "skipped" in r:
                print(f"  {name:16s} skipped: {r['skipped']}")
            else:
                print(f"  {name:16s} {r['MB_s']:8.1f} MB/s  ({r['vs_plain']:.2f} x plain)  "
                      f"{r['seconds']:.2f} s")

        if args.backlog_gib > 0:
            shutil.rmtree(base / "plain", ignore_errors=True)
            shutil.rmtree(base / "rsync", ignore_errors=True)
            home2 = base / "robot2"
            n = max(1, int(args.backlog_gib * 1024 // args.episode_mib))
            make_episodes(home2, n, args.episode_mib * MIB, sparse=True)
            host = Host(base / "h2", keys)
            try:
                mem = sync_push(home2, host, keys, sample=True)
            finally:
                host.stop()
            mem["MB_s"] = round(mem["bytes"] / mem["seconds"] / 1e6, 1)
            results["backlog"] = mem
            print(f"backlog {n} x {args.episode_mib} MiB sparse episodes "
                  f"({mem['bytes'] / 2**30:.2f} GiB) at {mem['MB_s']} MB/s: robot RSS "
                  f"{mem['rss_before_mib']} MiB before, max {mem['rss_max_mib']}, end "
                  f"{mem['rss_end_mib']}; host RSS max {mem['host_rss_max_mib']} MiB")
        if args.compare_tree:
            trees = [ROOT, *(t.resolve() for t in args.compare_tree)]
            runs, cpu = compare_trees(trees, home, paths, base, keys, args.rounds)
            plain = sorted(runs["plain TCP copy"])[len(runs["plain TCP copy"]) // 2]
            print(f"medians of {args.rounds} interleaved rounds (MB/s, x plain):")
            for name, v in runs.items():
                med = sorted(v)[len(v) // 2]
                c = sorted(cpu[name])[len(v) // 2] if name in cpu else None
                print(f"  {med:8.1f}  {med / plain:.2f} x  {name}  "
                      f"(runs: {', '.join(f'{x:.0f}' for x in v)})"
                      + (f"; CPU robot + host {c:.2f} ms per MiB" if c else ""))
            results["compare"] = {k: [round(x, 1) for x in v] for k, v in runs.items()}
            results["cpu_ms_per_mib"] = {k: [round(x, 2) for x in v] for k, v in cpu.items()}
        print(json.dumps(results))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
