"""Simulated-clock evaluation spread over worker processes (one engine, one MuJoCo scene and
one renderer each), for machines with cores to spare: :func:`evaluate_in_workers` returns what
:func:`ramp_edge.sim_eval.evaluate_bundle` returns, in seed order."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ramp_edge.sim_eval import SimEpisode, evaluate_bundle

__all__ = ["evaluate_in_workers"]


def _say(ep: SimEpisode) -> None:
    print(f"seed {ep.seed}: {ep.outcome}, progress {ep.progress:.2f}, grasped {ep.grasped}, "
          f"{ep.sim_s:.1f} s simulated in {ep.wall_s:.1f} s", file=sys.stderr, flush=True)


def _worker(bundle: str, kwargs: dict[str, Any], seeds: list[int],
            verbose: bool) -> list[dict[str, Any]]:
    eps = evaluate_bundle(bundle, seeds=seeds, on_episode=_say if verbose else None, **kwargs)
    return [e.as_dict() for e in eps]


def evaluate_in_workers(bundle_path: str | Path, *, seeds: Sequence[int], workers: int,
                        verbose: bool = False,
                        on_episode: Callable[[SimEpisode], None] | None = None,
                        **kwargs: Any) -> list[SimEpisode]:
    """Evaluate ``seeds`` in ``workers`` processes (seeds dealt round-robin); ``kwargs`` as
    :func:`~ramp_edge.sim_eval.evaluate_bundle` takes them (task, mode, config, backend,
    threads, duration_s). With ``verbose`` each worker prints a line per episode to stderr;
    ``on_episode`` sees every episode as its worker's share finishes. A worker's error is
    raised here."""
    seeds = [int(s) for s in seeds]
    workers = max(1, min(workers, len(seeds)))
    if workers == 1:
        return evaluate_bundle(bundle_path, seeds=seeds,
                               on_episode=on_episode or (_say if verbose else None), **kwargs)
    shares = [seeds[i::workers] for i in range(workers)]
    out: dict[int, SimEpisode] = {}
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited GL state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_worker, str(bundle_path), kwargs, share, verbose)
                   for share in shares]
        for fut in as_completed(futures):
            for d in fut.result():
                ep = SimEpisode(**d)
                out[ep.seed] = ep
                if on_episode is not None:
                    on_episode(ep)
    return [out[s] for s in seeds]
