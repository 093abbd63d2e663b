"""How closely a bundle's policy reproduces the actions of logged episodes, open loop.

    .venv/bin/python benchmarks/policy_fit.py BUNDLE EPISODES... [--every 5] [--backend B] [--json]

Every ``--every``-th sample of the episodes (at the policy rate, built exactly as training
builds them: frames, joint state, instruction tokens) goes through the bundle's engine in
standard and in efficient mode; the chunk it returns is set against the commands the episode
sent over the next chunk. Reported per mode: the mean absolute action error per joint (in the
joint's unit) and in units of the bundle's action std, and by position in the chunk.

On the episodes a policy was trained on this says whether the bundle computes what training
fitted (it found BC and RECAP bundles fed world-model tokens their policies never saw); on
held-out episodes, how far it generalises before any closed-loop drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.training.config import parse_config  # noqa: E402
from models.training.dataset import episode_paths, load_episodes  # noqa: E402
from ramp_edge.bundle import MODES, load_bundle  # noqa: E402
from ramp_edge.engines import open_engine, select_engine  # noqa: E402
from ramp_edge.engines.base import Observation  # noqa: E402


def fit(bundle_dir: Path, sources: list[str], every: int, backend: str | None) -> dict:
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    cfg = parse_config({"data": {"episodes": sources, "holdout_episodes": 0}})
    episodes, cams = load_episodes(episode_paths(sources), cfg.data, cfg.reward,
                                   bundle.tokenizer(), m.image_shape[:2],
                                   cameras=m.camera_names)
    if not episodes:
        raise SystemExit("policy_fit: no usable episodes (sealed, success or failure)")
    engine = open_engine(bundle, backend) if backend else select_engine(bundle)[0]
    h = m.chunk_size
    errors: dict[str, list[np.ndarray]] = {mode: [] for mode in MODES}
    try:
        for e in episodes:
            for t in range(0, len(e), every):
                obs = Observation(
                    images={c: e.frames[k, e.frame_index[t, k]] for k, c in enumerate(cams)},
                    joint_position=e.position[t], joint_velocity=e.velocity[t],
                    tokens=e.tokens)
                target = e.command[np.minimum(t + np.arange(h), len(e) - 1)]
                for mode in MODES:
                    errors[mode].append(np.abs(engine.predict(obs, mode).actions - target))
    finally:
        engine.close()
    std = m.normalization.action_std
    out = {"bundle": str(bundle_dir), "backend": engine.backend, "episodes": len(episodes),
           "samples": len(errors["standard"]), "joints": list(m.joint_names),
           "policy_uses_world_model": m.policy_uses_world_model, "modes": {}}
    for mode, errs in errors.items():
        a = np.stack(errs)  # [samples, chunk, joints]
        per_joint = a.mean((0, 1))
        out["modes"][mode] = {
            "mean_abs_error": float(a.mean()),
            "per_joint": [round(float(x), 5) for x in per_joint],
            "per_joint_in_std": [round(float(x), 3) for x in per_joint / std],
            "by_chunk_step": {int(k): round(float(a[:, k].mean()), 5)
                              for k in range(0, h, max(1, h // 5))},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("episodes", nargs="+",
                    help="Episode files, robot homes or directories (as [data] episodes).")
    ap.add_argument("--every", type=int, default=5, help="Every N-th sample (default 5).")
    ap.add_argument("--backend", default=None, help="Engine backend (default: the fastest).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.every < 1:
        ap.error("--every must be >= 1")
    res = fit(args.bundle, args.episodes, args.every, args.backend)
    if args.json:
        print(json.dumps(res))
        return
    print(f"{res['bundle']} ({res['backend']}): {res['samples']} samples of "
          f"{res['episodes']} episode(s); policy_uses_world_model "
          f"{res['policy_uses_world_model']}")
    for mode, r in res["modes"].items():
        print(f"  {mode:9s} mean |action error| {r['mean_abs_error']:.4f}; per joint "
              + " ".join(f"{x:.4f}" for x in r["per_joint"])
              + "; in action std " + " ".join(f"{x:.2f}" for x in r["per_joint_in_std"]))


if __name__ == "__main__":
    main()
