"""The RAMP loop in miniature, end to end through the command line (benchmarks/ramp_loop.py
--preset mini): one task, one demonstration, one iteration, one evaluation episode per point.
It proves the pipeline connects (demonstrations -> sync -> training -> engines -> deploy ->
evaluation -> HILR rollouts -> sync -> continual training -> report -> shipped bundle); the
figures of a real loop are in benchmarks/ramp_report.md. About 2 minutes on 2 cores, which
would take the default run past its 10-minute budget: it runs with ``pytest -m slow``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_when_the_loop_runs_in_miniature_expect_every_stage_connected(tmp_path):
    work, report, shipped = tmp_path / "loop", tmp_path / "report.md", tmp_path / "shipped"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ramp_loop.py"), "--work",
                          str(work), "--preset", "mini", "--task", "stack_blocks", "--report",
                          str(report), "--ship", str(shipped)],
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-4000:]
    res = json.loads((work / "results.json").read_text())
    assert res["finished"] and res["demos"][0]["outcome"] == "success"
    assert {"ramp-it0", "ramp-efficient-it0", "ramp-it1", "ramp-efficient-it1"} <= set(res["eval"])
    assert all(r["n"] == 1 for r in res["eval"].values())
    # The same points on the simulated clock, from the controller's first seed on.
    assert set(res["sim_eval"]) == set(res["eval"])
    assert all(r["n"] == 2 and r["episodes"][0]["seed"] == res["eval"][k]["episodes"][0]["seed"]
               for k, r in res["sim_eval"].items())
    # HILR rollouts were recorded, sealed and pushed: the host holds every sealed episode.
    rollout = res["hilr-it0"][0]["episode_id"]
    sys.path.insert(0, str(ROOT))
    from ramp_edge.episodes import EpisodeStore
    from ramp_edge.sync.host_store import HostStore

    with EpisodeStore(work / "robot") as store:
        sealed = {e.id for e in store.list() if e.sha256}
    host = HostStore(work / "host")
    try:
        on_host = {e["episode_id"] for e in host.episodes()}
        published = host.bundles()
    finally:
        host.close()
    assert rollout in on_host and sealed <= on_host
    assert len(published) == 2  # the RAMP bundle of each iteration was deployed through sync
    # Continual training started from the first run.
    assert (work / "runs" / "ramp-it1" / "model.pt").exists()
    text = report.read_text()
    assert "## Success rate per iteration" in text and "## Takeover rate" in text
    assert "## Chunk latency of the final RAMP bundle" in text
    assert "## Simulated clock against the controller, same seeds" in text
    assert "`ramp-edge sim eval` (simulated clock)" in text
    # The shipped bundle loads, passes its probe and says how it was made.
    from ramp_edge.bundle import load_bundle

    bundle = load_bundle(shipped)
    recipe = json.loads((shipped / "manifest.json").read_text())["provenance"]["recipe"]
    assert recipe["chosen"] in ("ramp-it0", "ramp-it1") and "--preset mini" in recipe["command"]
    assert bundle.joint_names[-1] == "gripper"
