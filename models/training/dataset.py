"""Training samples from sealed episodes, at the policy rate.

An episode recorded at the control rate (100 Hz) is resampled to the policy rate (50 Hz: every
other step). For each sample t:

* observation: per camera the latest frame captured at or before the step's time (the first
  frame where none is earlier), joint position/velocity, the instruction's token ids;
* action targets: the commands sent at samples t, t+1, ..., t+H-1 (absolute joint targets, the
  first one is what was sent right after observing o_t), padded with the last command at the
  episode's end, normalised with :class:`~models.export.JointStats`;
* world-model inputs at t + h for every horizon h (clamped to the last sample): their frames
  and joint state, which the target encoder turns into the future-latent targets;
* value target: the normalised return (:mod:`models.training.returns`).

Samples whose step is in a takeover transition window, whose control source is not a training
source (the safety layer's ``ramp``/``stop``) or whose joint state is missing are not trained
on; they still count for rewards and returns. JPEG frames are decoded once, resized to the
network's image size, and kept in memory as uint8 arrays. LeRobotDataset v3.0 directories give
the same samples (:mod:`models.training.lerobot_source`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.export import JointStats
from models.language import Tokenizer
from models.training.config import DataConfig, RewardConfig, TrainingError
from models.training.returns import episode_rewards, returns_to_go, task_scales
from ramp_edge.bundle import Normalization

__all__ = ["EpisodeSamples", "TrainingData", "episode_paths", "load_episodes"]

log = logging.getLogger(__name__)

_STD_FLOOR = 1e-3


def episode_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Episode files named by ``sources``: a file is taken as is; a LeRobot dataset (a
    directory with ``meta/info.json``) as is, for :func:`load_episodes` to read all of it; a
    robot home (a directory with ``index.sqlite``) gives its sealed episodes in start order;
    another directory gives every ``*.sqlite`` below it, sorted. Raises TrainingError for a
    path that does not exist."""
    from models.training.lerobot_source import is_lerobot_dataset

    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_file() or is_lerobot_dataset(p):
            out.append(p)
        elif (p / "index.sqlite").is_file():
            from ramp_edge.episodes import EpisodeStore

            with EpisodeStore(p) as store:
                out += [store.index.resolve(e) for e in store.list("sealed")]
        elif p.is_dir():
            out += sorted(q for q in p.rglob("*.sqlite") if q.name != "index.sqlite")
        else:
            raise TrainingError(f"episode source {p} does not exist")
    return list(dict.fromkeys(out))


@dataclass
class EpisodeSamples:
    """One episode at the policy rate (``n`` samples). Arrays are indexed by sample."""

    episode_id: str
    task: str
    outcome: str
    joint_names: tuple[str, ...]
    tokens: np.ndarray  # int64 [L]
    position: np.ndarray  # float32 [n, J]
    velocity: np.ndarray  # float32 [n, J]
    command: np.ndarray  # float32 [n, J]
    source: np.ndarray  # str [n]
    transition: np.ndarray  # bool [n]
    frames: np.ndarray  # uint8 [C, F, H, W, 3]
    frame_index: np.ndarray  # int64 [n, C]
    rewards: np.ndarray  # float64 [n], raw (-1 per step ...)
    trainable: np.ndarray  # bool [n]
    rollout: bool = False
    returns: np.ndarray | None = None  # float32 [n], normalised to [-1, 0]
    norm_rewards: np.ndarray | None = None  # float64 [n], rewards / task scale
    indicator: np.ndarray | None = None  # int8 [n]

    def __len__(self) -> int:
        return len(self.position)

    @property
    def human(self) -> np.ndarray:
        return self.source == "human"


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == hw:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))


def _read_episode(path: Path, cameras: Sequence[str] | None, data: DataConfig,
                  reward: RewardConfig, tokenizer: Tokenizer,
                  image_hw: tuple[int, int]) -> tuple[EpisodeSamples | None, list[str]]:
    from ramp_edge.episodes import open_episode

    with open_episode(path) as ep:
        outcome = ep.outcome
        cams = list(cameras) if cameras else sorted(ep.cameras())
        if outcome not in ("success", "failure"):
            log.warning("episode %s: outcome %s has no reward; skipped", path, outcome)
            return None, cams
        st = ep.steps()
        if len(st) < 2:
            log.warning("episode %s: fewer than 2 steps; skipped", path)
            return None, cams
        dt = float(np.median(np.diff(st.t_s)))
        stride = max(1, round((1.0 / data.policy_rate_hz) / dt)) if dt > 0 else 1
        keep = np.arange(0, len(st), stride)
        t_s = st.t_s[keep]
        frames, index = [], []
        for cam in cams:
            recs = list(ep.images(cam))
            if not recs:
                raise TrainingError(f"episode {path} has no frames from camera {cam!r}")
            t_cap = np.array([r.t_capture_s for r in recs])
            frames.append(np.stack([_resize(r.decode(), image_hw) for r in recs]))
            index.append(np.clip(np.searchsorted(t_cap, t_s, side="right") - 1, 0, None))
        n_frames = max(f.shape[0] for f in frames)
        # Pad cameras to one frame count so one array holds them; indices never reach the pad.
        frames = [np.concatenate([f, np.repeat(f[-1:], n_frames - len(f), 0)]) for f in frames]
        pos, vel, cmd = st.position[keep], st.velocity[keep], st.command[keep]
        source = st.source[keep]
        finite = (np.isfinite(pos).all(1) & np.isfinite(vel).all(1) & np.isfinite(cmd).all(1))
        transition = st.transition[keep]
        trainable = finite & ~transition & np.isin(source, list(data.sources))
        n = len(keep)
        return EpisodeSamples(
            episode_id=ep.episode_id, task=ep.task or ep.instruction, outcome=outcome,
            joint_names=tuple(ep.joint_names),
            tokens=tokenizer.encode(ep.instruction),
            position=np.nan_to_num(pos), velocity=np.nan_to_num(vel), command=cmd,
            source=source, transition=transition, frames=np.stack(frames),
            frame_index=np.stack(index, axis=1).astype(np.int64),
            rewards=episode_rewards(n, outcome, reward.c_fail_steps), trainable=trainable,
        ), cams


def load_episodes(paths: Sequence[Path], data: DataConfig, reward: RewardConfig,
                  tokenizer: Tokenizer, image_hw: tuple[int, int], *,
                  cameras: Sequence[str] | None = None, rollout: bool = False,
                  ) -> tuple[list[EpisodeSamples], tuple[str, ...]]:
    """Read ``paths`` (episode files, LeRobot dataset directories:
    :mod:`models.training.lerobot_source`) into samples; returns them and the camera names
    used. Episodes without a success/failure outcome are skipped with a warning. Raises
    TrainingError when an episode lacks one of the cameras."""
    from models.training.lerobot_source import is_lerobot_dataset, read_lerobot

    out = []
    cams = tuple(cameras or data.cameras)
    for p in paths:
        if is_lerobot_dataset(p):
            eps, used = read_lerobot(p, cams or None, data, reward, tokenizer, image_hw)
        else:
            ep, used = _read_episode(p, cams or None, data, reward, tokenizer, image_hw)
            eps = [ep] if ep is not None else []
        cams = cams or tuple(used)
        for ep in eps:
            ep.rollout = rollout
            out.append(ep)
    return out, cams


def joint_stats(episodes: Sequence[EpisodeSamples], names: Sequence[str],
                limits: Sequence[tuple[float, float]] = ()) -> JointStats:
    """Normalisation from configured joint limits, or else from the episodes' trainable
    samples (mean and std, std at least 1e-3)."""
    if limits:
        return JointStats.from_limits(names, list(limits))

    def stats(key: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([getattr(e, key)[e.trainable] for e in episodes]).astype(np.float64)
        return (x.mean(0).astype(np.float32),
                np.maximum(x.std(0), _STD_FLOOR).astype(np.float32))

    return JointStats(tuple(names), Normalization(*stats("position"), *stats("velocity"),
                                                  *stats("command")))


class TrainingData:
    """Episodes turned into batches. ``train``/``heldout``: (episode, sample) index pairs of
    trainable samples; batches are tensors on ``device``."""

    def __init__(self, episodes: list[EpisodeSamples], *, joints: JointStats,
                 cameras: tuple[str, ...], chunk_size: int, horizons: Sequence[int],
                 holdout_episodes: int, gamma: float) -> None:
        if not episodes:
            raise TrainingError("no usable episodes (sealed, success or failure) were found")
        self.episodes = episodes
        self.joints = joints
        self.cameras = cameras
        self.chunk_size = chunk_size
        self.horizons = np.asarray(horizons, np.int64)
        self.gamma = gamma
        scales = task_scales((e.task, returns_to_go(e.rewards, gamma)[0]) for e in episodes)
        for e in episodes:
            s = scales[e.task]
            e.norm_rewards = e.rewards / s
            e.returns = (returns_to_go(e.rewards, gamma) / s).astype(np.float32)
            if e.indicator is None:
                e.indicator = np.ones(len(e), np.int8)
        self.task_scales = dict(scales)
        base = [i for i, e in enumerate(episodes) if not e.rollout]
        n_hold = min(holdout_episodes, max(len(base) - 1, 0))
        self.heldout_episodes = base[len(base) - n_hold :] if n_hold else []
        held = set(self.heldout_episodes)
        pairs = [(i, t) for i, e in enumerate(episodes) for t in np.flatnonzero(e.trainable)]
        all_pairs = np.array(pairs, np.int64).reshape(-1, 2)
        in_held = np.isin(all_pairs[:, 0], list(held))
        self.train = all_pairs[~in_held]
        self.heldout = all_pairs[in_held]
        if not len(self.train):
            raise TrainingError("no trainable samples left after the held-out episodes")
        self.train_is_rollout = np.array([episodes[i].rollout for i in self.train[:, 0]], bool)
        n = joints.normalization
        self._pm, self._ps = n.position_mean, n.position_std
        self._vm, self._vs = n.velocity_mean, n.velocity_std
        self._am, self._as = n.action_mean, n.action_std

    def sample_indices(self, step: int, batch_size: int, seed: int, *, rank: int = 0,
                       world: int = 1, rollout_share: float | None = None) -> np.ndarray:
        """This rank's rows of ``train`` for global ``step``: every rank draws the same global
        batch from a generator seeded by (seed, step), so a resumed run sees the same batches,
        and takes its own slice. ``rollout_share``: the share drawn from rollout episodes."""
        rng = np.random.default_rng([seed, step])
        total = batch_size * world
        roll = np.flatnonzero(self.train_is_rollout)
        if rollout_share is None or not len(roll) or len(roll) == len(self.train):
            rows = rng.integers(0, len(self.train), total)
        else:
            base = np.flatnonzero(~self.train_is_rollout)
            k = round(total * rollout_share)
            rows = np.concatenate([rng.choice(roll, k), rng.choice(base, total - k)])
            rng.shuffle(rows)
        return rows[rank * batch_size : (rank + 1) * batch_size]

    def batch(self, pairs: np.ndarray, device: torch.device | str = "cpu", *,
              future: bool = True) -> dict[str, torch.Tensor]:
        """Tensors for (episode, sample) ``pairs`` [B, 2]: ``images`` uint8 [B*C, H, W, 3],
        ``position``/``velocity`` [B, J] normalised, ``tokens`` [B, L], ``actions`` [B, H, J]
        normalised, ``returns``/``indicator``/``human`` [B]; with ``future`` also
        ``future_images`` [B*K*C, H, W, 3] and ``future_position``/``future_velocity``
        [B*K, J] for the K horizons."""
        imgs, pos, vel, tok, act, ret, ind, hum = [], [], [], [], [], [], [], []
        f_imgs, f_pos, f_vel = [], [], []
        cams = np.arange(len(self.cameras))
        h_steps = np.arange(self.chunk_size)
        for ep_i, t in pairs:
            e = self.episodes[ep_i]
            n = len(e)
            imgs.append(e.frames[cams, e.frame_index[t]])
            pos.append(e.position[t])
            vel.append(e.velocity[t])
            tok.append(e.tokens)
            act.append(e.command[np.minimum(t + h_steps, n - 1)])
            ret.append(e.returns[t])
            ind.append(e.indicator[t])
            hum.append(e.source[t] == "human")
            if future:
                ft = np.minimum(t + self.horizons, n - 1)
                for f in ft:
                    f_imgs.append(e.frames[cams, e.frame_index[f]])
                f_pos.append(e.position[ft])
                f_vel.append(e.velocity[ft])
        out = {
            "images": torch.from_numpy(np.concatenate(imgs)),
            "position": torch.from_numpy((np.stack(pos) - self._pm) / self._ps),
            "velocity": torch.from_numpy((np.stack(vel) - self._vm) / self._vs),
            "tokens": torch.from_numpy(np.stack(tok)),
            "actions": torch.from_numpy((np.stack(act) - self._am) / self._as),
            "returns": torch.from_numpy(np.asarray(ret, np.float32)),
            "indicator": torch.from_numpy(np.asarray(ind, np.float32)),
            "human": torch.from_numpy(np.asarray(hum, bool)),
        }
        if future:
            out["future_images"] = torch.from_numpy(np.concatenate(f_imgs))
            out["future_position"] = torch.from_numpy(
                (np.concatenate(f_pos) - self._pm) / self._ps)
            out["future_velocity"] = torch.from_numpy(
                (np.concatenate(f_vel) - self._vm) / self._vs)
        return {k: v.to(device) for k, v in out.items()}

    def episode_batches(self, ep_i: int, batch_size: int, device: torch.device | str = "cpu"):
        """Every sample of episode ``ep_i`` in order, in batches (no future frames): for
        values over whole episodes."""
        n = len(self.episodes[ep_i])
        for s in range(0, n, batch_size):
            t = np.arange(s, min(s + batch_size, n))
            yield self.batch(np.stack([np.full_like(t, ep_i), t], 1), device, future=False)
