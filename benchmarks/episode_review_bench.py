"""What reviewing a long episode costs: ``episodes list`` (one line), ``show`` (with and without
verification), ``verify``, ``plot`` and ``label`` on one synthetic episode of N minutes at
100 Hz (7 joints, 2 cameras of 48x48 at 33 Hz, one takeover), recorded through the real store
and recorder (tests/episode_samples.py).

    .venv/bin/python benchmarks/episode_review_bench.py --minutes 10 [--repeat 3] [--json]

Reports the sealed file's size and steps, and per operation the best of ``--repeat`` wall
times (s), in-process (the CLI adds its start-up: about 0.4 s, plus matplotlib's import for
``plot``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from episode_samples import record_sample_episode

from ramp_edge.episodes import EpisodeStore
from ramp_edge.episodes.review import (
    episode_detail,
    episode_row,
    open_index,
    relabel,
    verify_episode,
)


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(minutes: float, repeat: int, root: Path) -> dict:
    steps = int(minutes * 60 * 100)
    store = EpisodeStore(root)
    t = time.perf_counter()
    entry = record_sample_episode(store, steps, takeover=(steps // 3, steps // 3 + 1500))
    record_s = time.perf_counter() - t
    store.close()
    from ramp_edge.episodes.plot import plot_episode

    out: dict = {"minutes": minutes, "steps": entry.steps, "file_mb": entry.bytes / 1e6,
                 "record_and_seal_s": record_s}
    with open_index(root) as index:
        path = index.resolve(entry)
        out["list_line_s"] = _best(lambda: episode_row(index, entry), repeat)
        out["show_no_verify_s"] = _best(lambda: episode_detail(index, entry, check=False),
                                        repeat)
        out["show_s"] = _best(lambda: episode_detail(index, entry), repeat)
        out["verify_s"] = _best(lambda: verify_episode(index, entry), repeat)
        out["plot_s"] = _best(lambda: plot_episode(path, root / "plot.png"), repeat)
        labels = iter(["failure", "success"] * repeat)
        out["label_s"] = _best(lambda: relabel(index, index.get(entry.id), next(labels)),
                               repeat)
        out["verify_after_label_ok"] = verify_episode(index, index.get(entry.id)).ok
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run(args.minutes, args.repeat, Path(d))
    if args.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}")


if __name__ == "__main__":
    main()
