"""The losses each training phase minimises, as modules DDP can wrap.

* :class:`WorldModelObjective` -- encoder + world model. Future-latent loss: MSE between the
  predicted latents at t + h and the latents an EMA *target encoder* (no gradient) gives the
  observations at t + h; an EMA target rather than the online encoder with a stop-gradient,
  because the online encoder could otherwise make prediction trivial by collapsing its
  latents. Value loss: MSE in (-1, 0) against the normalised return; the existing head is a
  scalar ``-sigmoid``, which the engines and the bundle contract already use, so no
  distributional bins. The ``value`` variant drops the latent loss.
* :class:`PolicyObjective` -- the policy (and optionally the encoder) with the world model
  frozen: L1 on normalised action chunks from the existing deterministic chunked decoder head.
  Kept rather than a flow-matching head: one forward pass per chunk fits the robot's latency
  budget and the exported graphs, probe and INT8 path stay as they are; a flow head would need
  ~10 denoising passes and a noise input in the graph contract.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.networks import ObservationEncoder, Policy, WorldModel

__all__ = ["INDICATOR_MASK", "PolicyObjective", "WorldModelObjective", "ema_update",
           "make_target_encoder", "policy_conditioning", "target_latents"]

# A masked indicator: halfway between the I=0 and I=1 embeddings (the policy blends them
# arithmetically), so "unknown" is its own input without changing the exported graph.
INDICATOR_MASK = 0.5


def make_target_encoder(encoder: ObservationEncoder) -> ObservationEncoder:
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, decay: float) -> None:
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.mul_(decay).add_(po.detach(), alpha=1.0 - decay)


class WorldModelObjective(nn.Module):
    """Loss of a batch for encoder + world model; returns (loss, parts)."""

    def __init__(self, encoder: ObservationEncoder, world_model: WorldModel, *,
                 latent_weight: float, value_weight: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.world_model = world_model
        self.latent_weight = latent_weight
        self.value_weight = value_weight

    def forward(self, batch: dict[str, Tensor],
                target_latents: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        o, lang = self.encoder(batch["images"], batch["position"], batch["velocity"],
                               batch["tokens"])
        future, value = self.world_model(o, lang)
        latent = F.mse_loss(future, target_latents.reshape(future.shape))
        val = F.mse_loss(value.squeeze(-1), batch["returns"])
        # The latent term stays in the graph with weight 0 for the value-only variant, so every
        # parameter gets a gradient and DDP needs no unused-parameter search.
        loss = self.latent_weight * latent + self.value_weight * val
        return loss, {"latent_loss": latent.detach(), "value_loss": val.detach()}


def target_latents(target: ObservationEncoder, batch: dict[str, Tensor],
                   n_horizons: int) -> Tensor:
    """The target encoder's latents of the observations at t + h: [B, K, latent_dim]."""
    b = batch["position"].shape[0]
    tokens = batch["tokens"].repeat_interleave(n_horizons, dim=0)
    with torch.no_grad():
        o, _ = target(batch["future_images"], batch["future_position"],
                      batch["future_velocity"], tokens)
    return o.reshape(b, n_horizons, -1)


def policy_conditioning(rng: np.random.Generator, batch_size: int, indicator: np.ndarray, *,
                        z_mask_p: float, indicator_mask_p: float,
                        use_indicator: bool) -> tuple[np.ndarray, np.ndarray]:
    """z_mask and indicator inputs [B, 1] float32 for one batch: z masked with ``z_mask_p``;
    the indicator is the data's (``use_indicator``) or 1 throughout (behaviour cloning), and
    replaced by :data:`INDICATOR_MASK` with ``indicator_mask_p``."""
    z_mask = (rng.random(batch_size) < z_mask_p).astype(np.float32)
    ind = indicator.astype(np.float32) if use_indicator else np.ones(batch_size, np.float32)
    masked = rng.random(batch_size) < indicator_mask_p
    ind = np.where(masked, np.float32(INDICATOR_MASK), ind).astype(np.float32)
    return z_mask[:, None], ind[:, None]


class PolicyObjective(nn.Module):
    """L1 action-chunk loss of the policy with the world model frozen; the encoder trains too
    when ``train_encoder``. Returns (loss, parts)."""

    def __init__(self, encoder: ObservationEncoder, world_model: WorldModel, policy: Policy, *,
                 train_encoder: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.world_model = world_model
        self.policy = policy
        self.train_encoder = train_encoder
        for p in world_model.parameters():
            p.requires_grad_(False)
        for p in encoder.parameters():
            p.requires_grad_(train_encoder)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            o, lang = self.encoder(batch["images"], batch["position"], batch["velocity"],
                                   batch["tokens"])
            future, _ = self.world_model(o, lang)
        actions = self.policy(o, lang, future, batch["z_mask"], batch["indicator_in"])
        loss = F.l1_loss(actions, batch["actions"])
        return loss, {"action_l1": loss.detach()}
