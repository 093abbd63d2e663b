"""The training stages, each a sequence of phases over one run directory.

* ``wm``: world model, fresh networks; value metrics on held-out episodes after.
* ``policy``: policy, after ``wm`` in RUN_DIR; z masked with ``policy.z_mask_p``; I from the
  advantages.
* ``continual``: world model then policy, from ``continual.init`` (or RUN_DIR's model), on
  base + rollout data; advantages recomputed; I masked too (``continual.indicator_mask_p``).
* ``bc`` (baseline): policy with z always masked, I fixed to 1, the encoder trained with it.
* ``recap`` (baseline): a value-only world model (the value model), then the policy with the
  advantage indicator and z always masked.

A phase checkpoints every ``run.checkpoint_every`` steps and at its end; started again it
resumes from its checkpoint (a finished phase is skipped). Batches depend only on (seed, step),
so a resumed run draws the batches the interrupted one would have.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from models.language import Tokenizer
from models.networks import RampConfig, RampNetworks
from models.training.advantages import advantage_indicator, n_step_advantages
from models.training.augment import random_shift
from models.training.checkpoint import load_checkpoint, save_atomic
from models.training.config import OptimConfig, TrainConfig, TrainingError
from models.training.dataset import TrainingData, episode_paths, joint_stats, load_episodes
from models.training.distributed import DistContext, init_distributed
from models.training.metrics_log import MetricsLog, Progress
from models.training.objectives import (
    PolicyObjective,
    WorldModelObjective,
    ema_update,
    make_target_encoder,
    policy_conditioning,
    target_latents,
)
from models.training.run_files import MODEL_FILE, RunModel, load_run_model, save_run_model
from models.training.value_metrics import value_quality

__all__ = ["STAGES", "compute_indicators", "predict_values", "run_stage"]

log = logging.getLogger(__name__)

STAGES = ("wm", "policy", "continual", "bc", "recap")


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # "wm" or "policy"
    steps: int
    batch_size: int
    lr: float
    # world model
    variant: str = "state_value"
    # policy
    z_mask_p: float = 0.2
    indicator_mask_p: float = 0.0
    use_indicator: bool = True
    train_encoder: bool = False
    rollout_share: float | None = None
    image_shift_px: int = 0
    lr_schedule: str = "constant"
    lr_final_fraction: float = 0.05

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of this phase."""
        if self.lr_schedule == "constant" or self.steps <= 1:
            return self.lr
        final = self.lr * self.lr_final_fraction
        x = min(step, self.steps - 1) / (self.steps - 1)
        return final + (self.lr - final) * 0.5 * (1.0 + math.cos(math.pi * x))


def _shared_options(o: OptimConfig) -> dict[str, Any]:
    """The optimiser section's options every phase built from it takes as they are."""
    return {"image_shift_px": o.image_shift_px, "lr_schedule": o.lr_schedule,
            "lr_final_fraction": o.lr_final_fraction}


def _phases(stage: str, cfg: TrainConfig) -> list[PhaseSpec]:
    w, p, c = cfg.wm, cfg.policy, cfg.continual
    ws, ps = _shared_options(w), _shared_options(p)
    wm = PhaseSpec("wm", w.steps, w.batch_size, w.lr, variant=w.variant, **ws)
    pol = PhaseSpec("policy", p.steps, p.batch_size, p.lr, z_mask_p=p.z_mask_p,
                    indicator_mask_p=p.indicator_mask_p, train_encoder=p.train_encoder,
                    **ps)
    if stage == "wm":
        return [wm]
    if stage == "policy":
        return [pol]
    if stage == "bc":
        return [PhaseSpec("policy", p.steps, p.batch_size, p.lr, z_mask_p=1.0,
                          use_indicator=False, train_encoder=True, **ps)]
    if stage == "recap":
        return [PhaseSpec("wm", w.steps, w.batch_size, w.lr, variant="value",
                          **ws),
                PhaseSpec("policy", p.steps, p.batch_size, p.lr, z_mask_p=1.0,
                          train_encoder=p.train_encoder, **ps)]
    if stage == "continual":
        return [PhaseSpec("wm", c.wm_steps, w.batch_size, c.lr, variant=w.variant,
                          rollout_share=c.rollout_share, **ws),
                PhaseSpec("policy", c.policy_steps, p.batch_size, c.lr, z_mask_p=p.z_mask_p,
                          indicator_mask_p=c.indicator_mask_p, train_encoder=p.train_encoder,
                          rollout_share=c.rollout_share, **ps)]
    raise TrainingError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")


# --------------------------------------------------------------------------- values, advantages


@torch.no_grad()
def predict_values(net: RampNetworks, data: TrainingData, ep_i: int, device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    """The world model's value at every sample of episode ``ep_i``, float64 [n]."""
    out = []
    for b in data.episode_batches(ep_i, batch_size, device):
        o, lang = net.encoder(b["images"], b["position"], b["velocity"], b["tokens"])
        out.append(net.world_model(o, lang)[1].squeeze(-1).double().cpu().numpy())
    return np.concatenate(out)


def compute_indicators(net: RampNetworks, data: TrainingData, cfg: TrainConfig,
                       device: torch.device) -> dict[str, float]:
    """Set every episode's advantage indicator from the world model's value; returns eps and
    the positive share."""
    adv, human, eligible, spans = [], [], [], []
    offset = 0
    for i, e in enumerate(data.episodes):
        v = predict_values(net, data, i, device)
        a = n_step_advantages(e.norm_rewards, v, cfg.reward.gamma, cfg.reward.n_step)
        spans.append((offset, len(a)))
        offset += len(a)
        adv.append(a)
        human.append(e.human)
        eligible.append(e.trainable)
    res = advantage_indicator(np.concatenate(adv), human=np.concatenate(human),
                              eligible=np.concatenate(eligible),
                              positive_share=cfg.reward.positive_share)
    for e, (start, n) in zip(data.episodes, spans, strict=True):
        e.indicator = res.indicator[start : start + n]
    return {"eps": res.eps, "positive_share": res.positive_share}


def _value_metrics(net: RampNetworks, data: TrainingData, device: torch.device) -> dict | None:
    if not data.heldout_episodes:
        return None
    pred, ret = [], []
    for i in data.heldout_episodes:
        e = data.episodes[i]
        v = predict_values(net, data, i, device)
        pred.append(v[e.trainable])
        ret.append(e.returns[e.trainable])
    return value_quality(np.concatenate(pred), np.concatenate(ret))


# --------------------------------------------------------------------------- the phase loop


def _batch(data: TrainingData, spec: PhaseSpec, cfg: TrainConfig, ctx: DistContext,
           step: int) -> dict[str, torch.Tensor]:
    rows = data.sample_indices(step, spec.batch_size, cfg.seed, rank=ctx.rank, world=ctx.world,
                               rollout_share=spec.rollout_share)
    pairs = data.train[rows]
    batch = data.batch(pairs, ctx.device, future=spec.name == "wm")
    if spec.image_shift_px:
        rng = np.random.default_rng([cfg.seed, step, ctx.rank, 2])
        batch["images"] = random_shift(batch["images"], spec.image_shift_px, rng)
    if spec.name == "policy":
        rng = np.random.default_rng([cfg.seed, step, ctx.rank, 1])
        z, ind = policy_conditioning(rng, len(pairs), batch["indicator"].cpu().numpy(),
                                     z_mask_p=spec.z_mask_p,
                                     indicator_mask_p=spec.indicator_mask_p,
                                     use_indicator=spec.use_indicator)
        batch["z_mask"] = torch.from_numpy(z).to(ctx.device)
        batch["indicator_in"] = torch.from_numpy(ind).to(ctx.device)
    return batch


def _run_phase(stage: str, spec: PhaseSpec, net: RampNetworks, data: TrainingData,
               cfg: TrainConfig, ctx: DistContext, run_dir: Path, metrics: MetricsLog,
               stop_at: int | None) -> bool:
    """Train one phase (resuming from its checkpoint); returns whether it finished."""
    ckpt_path = run_dir / "checkpoints" / f"{stage}-{spec.name}.pt"
    ckpt = load_checkpoint(ckpt_path)
    horizons = len(net.cfg.horizons)
    target = make_target_encoder(net.encoder) if spec.name == "wm" else None
    if ckpt is not None:
        net.load_state_dict(ckpt["networks"])
        if target is not None and ckpt.get("target_encoder") is not None:
            target.load_state_dict(ckpt["target_encoder"])
        if ckpt["done"]:
            if ctx.is_main:
                print(f"{stage}/{spec.name}: already done ({ckpt['step']} steps)",
                      file=sys.stderr)
            return True
    net.to(ctx.device)
    if target is not None:
        target.to(ctx.device)
    if spec.name == "wm":
        latent_w = cfg.wm.latent_weight if spec.variant == "state_value" else 0.0
        for p in net.parameters():
            p.requires_grad_(False)
        for m in (net.encoder, net.world_model):
            for p in m.parameters():
                p.requires_grad_(True)
        objective = WorldModelObjective(net.encoder, net.world_model, latent_weight=latent_w,
                                        value_weight=cfg.wm.value_weight)
    else:
        for p in net.policy.parameters():
            p.requires_grad_(True)
        objective = PolicyObjective(net.encoder, net.world_model, net.policy,
                                    train_encoder=spec.train_encoder)
        if spec.use_indicator:
            stats = compute_indicators(net, data, cfg, ctx.device)
            if ctx.is_main:
                metrics.write(stage, spec.name, {"kind": "indicator", **stats})
    params = [p for p in objective.parameters() if p.requires_grad]
    model = (DistributedDataParallel(objective, device_ids=None if ctx.device.type == "cpu"
                                     else [ctx.device]) if ctx.distributed else objective)
    wd = cfg.wm.weight_decay if spec.name == "wm" else cfg.policy.weight_decay
    clip = cfg.wm.grad_clip if spec.name == "wm" else cfg.policy.grad_clip
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=wd)
    step = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        if ctx.is_main:
            print(f"{stage}/{spec.name}: resumed from step {step}", file=sys.stderr)
    end = spec.steps if stop_at is None else min(spec.steps, stop_at)

    def save(done: bool) -> None:
        if ctx.is_main:
            save_atomic({"step": step, "done": done, "networks": net.state_dict(),
                         "target_encoder": None if target is None else target.state_dict(),
                         "optimizer": opt.state_dict()}, ckpt_path)
        ctx.barrier()

    progress = Progress(f"{stage}/{spec.name}", spec.steps, step, enabled=ctx.is_main)
    t_last = time.monotonic()
    while step < end:
        lr = spec.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _batch(data, spec, cfg, ctx, step)
        if spec.name == "wm":
            loss, parts = model(batch, target_latents(target, batch, horizons))
        else:
            loss, parts = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if target is not None:
            ema_update(target, net.encoder, cfg.wm.ema_decay)
        step += 1
        if step % cfg.run.log_every == 0 or step == end:
            values = {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}
            if ctx.is_main:
                now = time.monotonic()
                metrics.write(stage, spec.name, {
                    "step": step, **values, "grad_norm": float(grad_norm), "lr": lr,
                    "seconds": round(now - t_last, 4)})
                t_last = now
            progress.update(step, **values)
        if step % cfg.run.checkpoint_every == 0 and step < spec.steps:
            save(False)
    progress.close()
    done = step >= spec.steps
    save(done)
    if done and spec.name == "wm" and ctx.is_main:
        vq = _value_metrics(net, data, ctx.device)
        if vq is not None:
            record = {"kind": "value_quality", "variant": spec.variant, "step": step, **vq}
            metrics.write(stage, spec.name, record)
            path = run_dir / "value_metrics.json"
            table = json.loads(path.read_text()) if path.exists() else {}
            table[f"{stage}/{spec.variant}"] = record
            path.write_text(json.dumps(table, indent=2) + "\n")
    return done


# --------------------------------------------------------------------------- stages


def _prepare_run_dir(run_dir: Path, config_text: str, ctx: DistContext) -> None:
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_copy = run_dir / "config.toml"
        if cfg_copy.exists() and cfg_copy.read_text(encoding="utf-8") != config_text:
            raise TrainingError(f"{run_dir} was made with another config (its config.toml "
                                "differs): use a new --out directory")
        if not cfg_copy.exists():
            tmp = cfg_copy.with_suffix(".toml.tmp")
            tmp.write_text(config_text, encoding="utf-8")
            tmp.replace(cfg_copy)
    ctx.barrier()


def _load_data(cfg: TrainConfig, model_cfg: dict, cameras: Sequence[str] | None,
               with_rollouts: bool) -> tuple[list, tuple[str, ...], tuple[int, int]]:
    base = RampConfig()
    hw = (int(model_cfg.get("image_height", base.image_height)),
          int(model_cfg.get("image_width", base.image_width)))
    tok = Tokenizer(vocab_size=int(model_cfg.get("vocab_size", base.vocab_size)),
                    max_length=int(model_cfg.get("max_tokens", base.max_tokens)))
    if not cfg.data.episodes:
        raise TrainingError("the config names no episodes (data.episodes)")
    paths = episode_paths([cfg.resolve(p) for p in cfg.data.episodes])
    eps, cams = load_episodes(paths, cfg.data, cfg.reward, tok, hw, cameras=cameras)
    if with_rollouts and cfg.data.rollouts:
        roll = episode_paths([cfg.resolve(p) for p in cfg.data.rollouts])
        more, _ = load_episodes(roll, cfg.data, cfg.reward, tok, hw, cameras=cams,
                                rollout=True)
        eps += more
    if not eps:
        raise TrainingError("no usable episodes (sealed, with a success or failure outcome)")
    names = eps[0].joint_names
    odd = [e.episode_id for e in eps if e.joint_names != names]
    if odd:
        raise TrainingError(f"episodes {odd[:3]} have other joints than {list(names)}")
    return eps, cams, hw


def run_stage(stage: str, cfg: TrainConfig, config_text: str, run_dir: str | Path, *,
              init: str | Path | None = None, stop_at: int | None = None) -> Path | None:
    """Run ``stage`` into ``run_dir`` (as one process, or as a DDP rank under torchrun).

    ``init``: for ``continual``, the run to start from (default ``continual.init``, else
    ``run_dir``'s own model). ``stop_at``: stop each phase at this step with a checkpoint (for
    time-limited jobs; the same command resumes). Returns ``run_dir/model.pt`` once the stage
    has finished, None when stopped early. Raises TrainingError.
    """
    if stage not in STAGES:
        raise TrainingError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    run_dir = Path(run_dir)
    ctx = init_distributed(cfg.run.device)
    try:
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        _prepare_run_dir(run_dir, config_text, ctx)
        own = load_run_model(run_dir)
        if own is not None and stage in own.stages:
            if ctx.is_main:
                print(f"{stage}: already done in {run_dir}", file=sys.stderr)
            return run_dir / MODEL_FILE
        start = _starting_model(stage, cfg, run_dir, own, init)
        eps, cams, _ = _load_data(cfg, cfg.model, start.cameras if start else None,
                                  with_rollouts=stage == "continual")
        if start is None:
            kwargs = {**cfg.model, "n_joints": len(eps[0].joint_names), "n_cameras": len(cams)}
            try:
                model_cfg = RampConfig.from_dict(kwargs)
            except ValueError as err:
                raise TrainingError(f"config [model]: {err}") from err
            torch.manual_seed(cfg.seed)
            net = RampNetworks(model_cfg)
            joints = joint_stats(eps, eps[0].joint_names, cfg.data.joint_limits)
            tok = Tokenizer(vocab_size=model_cfg.vocab_size, max_length=model_cfg.max_tokens)
            start = RunModel(net, joints, cams, tok, [], {})
        elif tuple(eps[0].joint_names) != tuple(start.joints.names):
            raise TrainingError("the episodes' joints differ from the model's "
                                f"{list(start.joints.names)}")
        net = start.networks
        data = TrainingData(eps, joints=start.joints, cameras=start.cameras,
                            chunk_size=net.cfg.chunk_size, horizons=net.cfg.horizons,
                            holdout_episodes=cfg.data.holdout_episodes, gamma=cfg.reward.gamma)
        metrics = MetricsLog(run_dir) if ctx.is_main else None
        if ctx.is_main:
            n_roll = sum(e.rollout for e in eps)
            print(f"{stage}: {len(eps)} episodes ({n_roll} rollouts), {len(data.train)} "
                  f"training samples, {len(data.heldout)} held out, {ctx.world} rank(s) on "
                  f"{ctx.device}", file=sys.stderr)
        for spec in _phases(stage, cfg):
            if not _run_phase(stage, spec, net, data, cfg, ctx, run_dir, metrics, stop_at):
                return None
        net.cpu()
        if ctx.is_main:
            info = dict(start.info)
            info["task_scales"] = data.task_scales
            if stage in ("wm", "recap", "continual"):
                info["wm_variant"] = "value" if stage == "recap" else cfg.wm.variant
            policy = [sp for sp in _phases(stage, cfg) if sp.name == "policy"]
            if policy:  # the policy's last training says whether it reads the world model
                info["policy_uses_world_model"] = policy[-1].z_mask_p < 1.0
            start.stages.append(stage)
            start.info = info
            save_run_model(run_dir, start)
        ctx.barrier()
        return run_dir / MODEL_FILE
    finally:
        ctx.close()


def _starting_model(stage: str, cfg: TrainConfig, run_dir: Path, own: RunModel | None,
                    init: str | Path | None) -> RunModel | None:
    """The model a stage starts from: None for fresh networks."""
    if stage == "policy":
        if own is None or not ({"wm", "continual"} & set(own.stages)):
            raise TrainingError(f"{run_dir} has no trained world model: run `ramp-edge train wm "
                                f"--out {run_dir}` first")
        return own
    if stage == "continual":
        if own is not None:
            return own
        src = init or (cfg.resolve(cfg.continual.init) if cfg.continual.init else None)
        if src is None:
            raise TrainingError("continual training needs a trained run: set continual.init "
                                "or pass --init RUN_DIR")
        model = load_run_model(src)
        if model is None:
            raise TrainingError(f"{src} holds no trained model to continue from")
        return model
    if own is not None:
        raise TrainingError(f"{run_dir} already holds a model from {'+'.join(own.stages)}: "
                            f"use a new --out directory for {stage}")
    return None
