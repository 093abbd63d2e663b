"""A training run's configuration: one TOML file, validated up front into frozen dataclasses.

Sections (every key optional; defaults in the dataclasses below)::

    seed = 0
    [model]      # RampConfig fields (image size, channels, ...); n_joints/n_cameras from data
    [data]       # episodes = [...] files, robot homes or directories; rollouts = [...]
    [reward]     # c_fail_steps, gamma, n_step, positive_share
    [wm]         # variant ("state_value" | "value"), steps, batch_size, lr, ...
    [policy]     # steps, batch_size, lr, z_mask_p, indicator_mask_p, train_encoder,
                 # image_shift_px, lr_schedule, lr_final_fraction
    [continual]  # init (a run directory), wm_steps, policy_steps, indicator_mask_p, ...
    [run]        # checkpoint_every, log_every, device, threads

Relative paths in ``[data]`` and ``continual.init`` are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import EdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

__all__ = [
    "ContinualConfig",
    "DataConfig",
    "OptimConfig",
    "PolicyConfig",
    "RewardConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingError",
    "WorldModelConfig",
    "load_config",
    "parse_config",
]

WM_VARIANTS = ("state_value", "value")
LR_SCHEDULES = ("constant", "cosine")


class TrainingError(EdgeError, ValueError):
    """A training run cannot go on: bad config, no usable episodes, a run directory that does
    not match, a missing earlier stage. The message says which."""


@dataclass(frozen=True)
class DataConfig:
    """Where episodes come from and how they are turned into samples.

    ``episodes``/``rollouts``: episode files, robot homes (holding ``index.sqlite``: its sealed
    episodes) or directories (every ``*.sqlite`` below). ``cameras``: names in the order the
    networks take them (default: the first episode's cameras, sorted). ``policy_rate_hz``: the
    sample rate; episodes are resampled to it (every other step of a 100 Hz recording).
    ``holdout_episodes``: how many episodes (the last ones in path order) are kept out of
    training for value metrics. ``sources``: control sources whose steps become samples
    (``ramp``/``stop`` commands are the safety layer's, not anyone's decisions).
    """

    episodes: tuple[str, ...] = ()
    rollouts: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    policy_rate_hz: float = 50.0
    holdout_episodes: int = 1
    sources: tuple[str, ...] = ("policy", "human", "hold")
    joint_limits: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class RewardConfig:
    """Reward -1 per step, ``-c_fail_steps`` on a failure's last step, 0 on a success's last;
    n-step advantages with ``gamma``; the indicator threshold is the quantile of the advantages
    that leaves ``positive_share`` of the (non-human, non-transition) steps positive."""

    c_fail_steps: float = 50.0
    gamma: float = 1.0
    n_step: int = 10
    positive_share: float = 0.35


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    # Random-shift augmentation of the observation's camera images: each image is padded by
    # this many pixels (edge pixels repeated) and cropped back at a random offset, per sample.
    # The usual remedy for image policies trained on few demonstrations (they otherwise learn
    # pixel positions by heart); 0 turns it off. Future-frame targets are never shifted.
    image_shift_px: int = 0
    # Learning rate over the phase: "constant", or "cosine" (from lr down to lr_final_fraction
    # x lr at the last step). A constant rate leaves Adam on an L1 action loss hovering at a
    # noise floor set by the rate; decaying it lets the fit settle.
    lr_schedule: str = "constant"
    lr_final_fraction: float = 0.05


@dataclass(frozen=True)
class WorldModelConfig(OptimConfig):
    """World-model training. ``variant``: ``state_value`` (future latents + value, the paper's
    best) or ``value`` (value only, the ablation and RECAP's value model). The future-latent
    targets come from an EMA target encoder (``ema_decay``), stop-gradient."""

    variant: str = "state_value"
    latent_weight: float = 1.0
    value_weight: float = 1.0
    ema_decay: float = 0.99


@dataclass(frozen=True)
class PolicyConfig(OptimConfig):
    """Policy training. ``z_mask_p``: share of samples whose world-model tokens are masked;
    ``indicator_mask_p``: share whose indicator is masked (set to the neutral 0.5);
    ``train_encoder``: whether the observation encoder moves too (off by default when a world
    model reads it, since moving it would invalidate the world model's latents and value)."""

    z_mask_p: float = 0.2
    indicator_mask_p: float = 0.0
    train_encoder: bool = False


@dataclass(frozen=True)
class ContinualConfig:
    """Continual training: start from the run at ``init``, retrain the world model for
    ``wm_steps`` on base + rollout data, recompute advantages, fine-tune the policy for
    ``policy_steps`` with the indicator masked with ``indicator_mask_p``. ``rollout_share``:
    the share of each batch drawn from rollouts."""

    init: str = ""
    wm_steps: int = 500
    policy_steps: int = 1000
    indicator_mask_p: float = 0.2
    rollout_share: float = 0.5
    lr: float = 1e-4


@dataclass(frozen=True)
class RunConfig:
    """``checkpoint_every``/``log_every``: in optimiser steps. ``device``: ``auto`` (CUDA when
    present), ``cpu`` or ``cuda``. ``threads``: torch intra-op threads per process (0: leave)."""

    checkpoint_every: int = 200
    log_every: int = 10
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = DataConfig()
    reward: RewardConfig = RewardConfig()
    wm: WorldModelConfig = WorldModelConfig()
    policy: PolicyConfig = PolicyConfig()
    continual: ContinualConfig = ContinualConfig()
    run: RunConfig = RunConfig()
    base_dir: str = "."

    def resolve(self, path: str) -> Path:
        """``path`` relative to the config file's directory (absolute paths unchanged)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


def _section(cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise TrainingError(f"config [{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainingError(f"config [{name}] has unknown keys {unknown}")
    kwargs = {}
    for key, value in data.items():
        default = known[key].default
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise TrainingError(f"config {name}.{key} must be a list")
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise TrainingError(f"config {name}.{key} must be true or false")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TrainingError(f"config {name}.{key} must be a number")
            value = float(value)
        elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise TrainingError(f"config {name}.{key} must be an integer")
        elif isinstance(default, str) and not isinstance(value, str):
            raise TrainingError(f"config {name}.{key} must be a string")
        kwargs[key] = value
    return cls(**kwargs)


def _check(cfg: TrainConfig) -> None:
    problems = []
    r = cfg.reward
    if not 0.0 < r.positive_share < 1.0:
        problems.append("reward.positive_share must be in (0, 1)")
    if not 0.0 < r.gamma <= 1.0:
        problems.append("reward.gamma must be in (0, 1]")
    if r.n_step < 1 or r.c_fail_steps < 0:
        problems.append("reward.n_step must be >= 1 and reward.c_fail_steps >= 0")
    for name, o in (("wm", cfg.wm), ("policy", cfg.policy)):
        if o.steps < 0 or o.batch_size < 1 or o.lr <= 0:
            problems.append(f"{name}: steps >= 0, batch_size >= 1 and lr > 0 are needed")
        if not 0 <= o.image_shift_px <= 16:
            problems.append(f"{name}.image_shift_px must be in 0..16")
        if o.lr_schedule not in LR_SCHEDULES:
            problems.append(f"{name}.lr_schedule must be one of {list(LR_SCHEDULES)}")
        if not 0.0 <= o.lr_final_fraction <= 1.0:
            problems.append(f"{name}.lr_final_fraction must be in [0, 1]")
    if cfg.wm.variant not in WM_VARIANTS:
        problems.append(f"wm.variant must be one of {list(WM_VARIANTS)}")
    if not 0.0 < cfg.wm.ema_decay < 1.0:
        problems.append("wm.ema_decay must be in (0, 1)")
    for name, p in (("policy.z_mask_p", cfg.policy.z_mask_p),
                    ("policy.indicator_mask_p", cfg.policy.indicator_mask_p),
                    ("continual.indicator_mask_p", cfg.continual.indicator_mask_p),
                    ("continual.rollout_share", cfg.continual.rollout_share)):
        if not 0.0 <= p <= 1.0:
            problems.append(f"{name} must be in [0, 1]")
    if cfg.data.policy_rate_hz <= 0 or cfg.data.holdout_episodes < 0:
        problems.append("data.policy_rate_hz must be > 0 and data.holdout_episodes >= 0")
    if cfg.run.checkpoint_every < 1 or cfg.run.log_every < 1:
        problems.append("run.checkpoint_every and run.log_every must be >= 1")
    if cfg.run.device not in ("auto", "cpu", "cuda"):
        problems.append("run.device must be auto, cpu or cuda")
    if any(len(lim) != 2 for lim in cfg.data.joint_limits):
        problems.append("data.joint_limits must be [min, max] pairs")
    if problems:
        raise TrainingError("bad training config: " + "; ".join(problems))


def parse_config(data: dict[str, Any], base_dir: str | Path = ".") -> TrainConfig:
    """A :class:`TrainConfig` from parsed TOML. Raises TrainingError naming every problem."""
    sections = {"model": None, "data": DataConfig, "reward": RewardConfig,
                "wm": WorldModelConfig, "policy": PolicyConfig, "continual": ContinualConfig,
                "run": RunConfig}
    unknown = sorted(set(data) - set(sections) - {"seed"})
    if unknown:
        raise TrainingError(f"config has unknown keys {unknown}")
    kwargs: dict[str, Any] = {"base_dir": str(base_dir)}
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TrainingError("config seed must be an integer")
    kwargs["seed"] = seed
    for name, cls in sections.items():
        if name not in data:
            continue
        if cls is None:
            if not isinstance(data[name], dict):
                raise TrainingError("config [model] must be a table")
            kwargs[name] = dict(data[name])
        else:
            kwargs[name] = _section(cls, data[name], name)
    cfg = TrainConfig(**kwargs)
    _check(cfg)
    return cfg


def load_config(path: str | Path) -> tuple[TrainConfig, str]:
    """The config at ``path`` and its text (copied into the run directory)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as err:
        raise TrainingError(f"cannot read training config {p}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise TrainingError(f"training config {p} is not valid TOML: {err}") from err
    return parse_config(data, p.resolve().parent), text
