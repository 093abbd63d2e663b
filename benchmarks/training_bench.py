"""Training throughput of the reference-size RAMP networks on this machine.

Records sample episodes through the real recorder, then times optimiser steps of the world-model
phase (encoder + world model + EMA target encoder on 4 future frames) and of the policy phase
(frozen encoder and world model), batch 32, one process. Prints one line per phase.

    .venv/bin/python benchmarks/training_bench.py [--steps 20] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from episode_samples import sample_store

from models.language import Tokenizer
from models.networks import RampConfig, RampNetworks
from models.training.config import parse_config
from models.training.dataset import (
    TrainingData,
    episode_paths,
    joint_stats,
    load_episodes,
)
from models.training.objectives import (
    PolicyObjective,
    WorldModelObjective,
    make_target_encoder,
    policy_conditioning,
    target_latents,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = sample_store(Path(tmp), episodes=3, steps=400, takeover=(150, 220))
        store.close()
        cfg = parse_config({"data": {"holdout_episodes": 0}})
        t0 = time.perf_counter()
        eps, cams = load_episodes(episode_paths([tmp]), cfg.data, cfg.reward, Tokenizer(),
                                  (96, 96))
        load_s = time.perf_counter() - t0
    model_cfg = RampConfig()
    data = TrainingData(eps, joints=joint_stats(eps, eps[0].joint_names), cameras=cams,
                        chunk_size=50, horizons=model_cfg.horizons, holdout_episodes=0,
                        gamma=1.0)
    n = sum(len(e) for e in eps)
    print(f"load: {n} samples (3 episodes, 2 cameras, 48->96 px) in {load_s:.2f} s")
    torch.manual_seed(0)
    net = RampNetworks(model_cfg)
    target = make_target_encoder(net.encoder)
    rng = np.random.default_rng(0)
    for name in ("wm", "policy"):
        # The policy objective freezes the encoder and world model, so it is made second.
        obj = (WorldModelObjective(net.encoder, net.world_model, latent_weight=1.0,
                                   value_weight=1.0) if name == "wm" else
               PolicyObjective(net.encoder, net.world_model, net.policy, train_encoder=False))
        opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-4)
        times = []
        for step in range(args.steps + 2):
            rows = data.sample_indices(step, args.batch, 0)
            t = time.perf_counter()
            batch = data.batch(data.train[rows], future=name == "wm")
            if name == "wm":
                loss, _ = obj(batch, target_latents(target, batch, 4))
            else:
                z, ind = policy_conditioning(rng, args.batch, batch["indicator"].numpy(),
                                             z_mask_p=0.2, indicator_mask_p=0.0,
                                             use_indicator=True)
                batch["z_mask"], batch["indicator_in"] = torch.from_numpy(z), \
                    torch.from_numpy(ind)
                loss, _ = obj(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 2:  # first steps warm up allocators
                times.append(time.perf_counter() - t)
        med = float(np.median(times))
        print(f"{name}: batch {args.batch}, {args.threads} threads: median {med * 1e3:.0f} ms "
              f"per step, {args.batch / med:.0f} samples/s ({args.steps} steps)")


if __name__ == "__main__":
    main()
