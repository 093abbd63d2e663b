"""``ramp-edge run`` on the emulated robot (a separate process, wall-clock rate) with
recording on, for tests that set the controller's recorded steps against something else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).parent / "ramp-edge"


def recorded_run(home: Path, *args: str, timeout: float = 240):
    """Run ``ramp-edge run ARGS --record --json`` with ``home`` as the robot's home and return
    the recorded episode's steps (:class:`ramp_edge.episodes.reader.StepArrays`)."""
    from ramp_edge.episodes import EpisodeStore, open_episode

    (home / "bundles").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(RAMP_EDGE_HOME=str(home), PYTHONUNBUFFERED="1")
    out = subprocess.run([str(EXE), "run", *args, "--record", "--json"], capture_output=True,
                         text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)["per_episode"][0]["recording"]
    with EpisodeStore(home) as store:
        path = store.path_of(rec["episode_id"])
    with open_episode(path) as ep:
        return ep.steps()
