"""The RAMP networks: observation encoder, world model and world-model-conditioned policy.

Three parts, exported as three graphs so an engine can skip the world model ("efficient mode"):

* :class:`ObservationEncoder` -- camera images (uint8 HxWx3, one per camera, normalised inside),
  joint position/velocity (already normalised by the bundle's stats) and instruction token ids ->
  the observation latent ``o`` (``latent_dim``) and a pooled language embedding ``l``
  (``lang_dim``).
* :class:`WorldModel` -- from ``o`` (and ``l``: the value depends on the task) jointly predicts
  the future latents at ``t + horizons`` (12/24/36/48 steps) and the value ``v_t`` in (-1, 0), as
  the paper's best variant (state + value) does.
* :class:`Policy` -- an action chunk (``chunk_size`` x ``n_joints``, normalised absolute joint
  targets) from ``o``, ``l``, the projected world-model tokens ``z`` and the advantage indicator
  ``I`` (1 at inference). With ``z_mask = 1`` the ``z`` tokens are replaced by a learned mask
  token, which is how training (z masked with p=0.2) teaches it to run without the world model.

Everything is export-friendly: static shapes (batch 1 when exported), no data-dependent control
flow (masking is arithmetic, not ``if``), plain ops that torch.export, ONNX, ONNX Runtime's
static INT8 quantization and TensorRT all handle. The sizes are small but real: the reference
configuration runs a chunk (world model + policy) in milliseconds on a 2-core x86 CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EncoderGraph",
    "ObservationEncoder",
    "Policy",
    "PolicyGraph",
    "RampConfig",
    "RampNetworks",
    "WorldModel",
    "WorldModelGraph",
]


@dataclass(frozen=True)
class RampConfig:
    """Shapes and sizes of the RAMP networks; a bundle's manifest records it
    (:meth:`to_dict`) so the torch backend can rebuild the networks from a state dict."""

    n_cameras: int = 2
    image_height: int = 96
    image_width: int = 96
    n_joints: int = 7
    chunk_size: int = 50
    horizons: tuple[int, ...] = (12, 24, 36, 48)
    vocab_size: int = 8192
    max_tokens: int = 32
    cnn_channels: tuple[int, ...] = (32, 64, 64, 128, 128)
    cnn_strides: tuple[int, ...] = (2, 2, 1, 2, 2)
    camera_dim: int = 256
    #: 0: the last feature map is flattened into the camera feature; K > 0: K learnt keypoints,
    #: each the softmax-weighted mean (x, y) of one 1x1-conv map (spatial softmax).
    keypoints: int = 0
    joint_dim: int = 128
    latent_dim: int = 256
    lang_dim: int = 128
    #: 0: the instruction is the mean of its token embeddings (a bag of words: word order is
    #: lost); N > 0: N self-attention layers over the tokens and their positions first, so
    #: "the red cube on the blue cube" and "the blue cube on the red cube" differ.
    lang_layers: int = 0
    #: True: the instruction scales and shifts every CNN layer's channels (FiLM), so what the
    #: camera features keep can depend on what was asked ("the red cube": where red is).
    film: bool = False
    wm_hidden: int = 768
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 3
    mlp_ratio: int = 4
    action_patch: int = 5

    def __post_init__(self) -> None:
        positive = (
            "n_cameras", "image_height", "image_width", "n_joints", "chunk_size", "vocab_size",
            "max_tokens", "camera_dim", "joint_dim", "latent_dim", "lang_dim", "wm_hidden",
            "d_model", "n_heads", "n_layers", "mlp_ratio", "action_patch",
        )
        for name in positive:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("keypoints", "lang_layers"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be 0 or a positive integer, not {value!r}")
        if type(self.film) is not bool:
            raise ValueError(f"film must be true or false, not {self.film!r}")
        if self.lang_layers and self.lang_dim % self.n_heads:
            raise ValueError(f"lang_dim {self.lang_dim} is not a multiple of n_heads "
                             f"{self.n_heads} (needed by lang_layers)")
        if not self.horizons or any(type(h) is not int or h < 1 for h in self.horizons):
            raise ValueError(f"horizons must be positive integers, not {self.horizons!r}")
        if len(self.cnn_channels) != len(self.cnn_strides) or not self.cnn_channels:
            raise ValueError("cnn_channels and cnn_strides must be non-empty and the same length")
        if self.chunk_size % self.action_patch:
            raise ValueError(f"chunk_size {self.chunk_size} is not a multiple of action_patch "
                             f"{self.action_patch}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.feature_hw[0] < 1 or self.feature_hw[1] < 1:
            raise ValueError("the images are too small for the CNN's strides")

    @property
    def feature_hw(self) -> tuple[int, int]:
        """Height and width of the CNN's last feature map."""
        h, w = self.image_height, self.image_width
        for s in self.cnn_strides:
            h, w = (h - 1) // s + 1, (w - 1) // s + 1
        return h, w

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> RampConfig:
        """Rebuild from :meth:`to_dict` output. Raises ``ValueError`` for unknown keys or values
        that do not make a working network."""
        if not isinstance(data, dict):
            raise ValueError("model config must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(f"model config: {err}") from err


# ImageNet-free image normalisation: uint8 [0, 255] -> roughly zero mean, unit spread.
_PIXEL_MEAN = 127.5
_PIXEL_SCALE = 1.0 / 64.0


class ObservationEncoder(nn.Module):
    """Images + joint state + instruction -> observation latent ``o`` and language ``l``.

    A CNN shared by all cameras (conv + ReLU; the last feature map is flattened so where things
    are in the image survives, or with ``keypoints`` K > 0 reduced to K image positions by a
    spatial softmax, which keeps where things are with fewer weights to learn) plus a learned
    per-camera embedding; a joint-state MLP; a fusion
    layer with LayerNorm. Language: an embedding table over the tokenizer's ids, mean-pooled over
    the non-padding tokens; with ``lang_layers`` N > 0 the tokens, with position embeddings,
    first pass N pre-norm self-attention blocks (padding masked), so word order counts. With
    ``film`` the instruction is encoded first and sets a per-channel scale and shift of every
    conv layer (FiLM; zero-initialised, so training starts from the unmodulated CNN).
    """

    def __init__(self, cfg: RampConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 3
        for i, (c_out, stride) in enumerate(zip(cfg.cnn_channels, cfg.cnn_strides, strict=True)):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2), nn.ReLU()]
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        fh, fw = cfg.feature_hw
        if cfg.keypoints:
            self.keypoint_maps = nn.Conv2d(c_in, cfg.keypoints, 1)
            ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, fh), torch.linspace(-1.0, 1.0, fw),
                                    indexing="ij")
            self.register_buffer("pixel_xy", torch.stack([xs.flatten(), ys.flatten()], dim=1),
                                 persistent=False)
            self.cam_proj = nn.Linear(2 * cfg.keypoints, cfg.camera_dim)
        else:
            self.cam_proj = nn.Linear(c_in * fh * fw, cfg.camera_dim)
        self.cam_embed = nn.Parameter(torch.randn(cfg.n_cameras, cfg.camera_dim) * 0.02)
        self.joint_mlp = nn.Sequential(
            nn.Linear(2 * cfg.n_joints, cfg.joint_dim), nn.GELU(),
            nn.Linear(cfg.joint_dim, cfg.joint_dim), nn.GELU(),
        )
        self.fuse = nn.Linear(cfg.n_cameras * cfg.camera_dim + cfg.joint_dim, cfg.latent_dim)
        self.norm = nn.LayerNorm(cfg.latent_dim)
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.lang_dim)
        self.lang_proj = nn.Linear(cfg.lang_dim, cfg.lang_dim)
        self.lang_norm = nn.LayerNorm(cfg.lang_dim)
        if cfg.lang_layers:
            # As large as the token embeddings (N(0, 1)): position is not drowned out at the start.
            self.token_pos = nn.Parameter(torch.randn(cfg.max_tokens, cfg.lang_dim))
            self.lang_blocks = nn.ModuleList(
                _EncoderBlock(cfg.lang_dim, cfg.n_heads, cfg.mlp_ratio)
                for _ in range(cfg.lang_layers)
            )
        if cfg.film:
            self.film_proj = nn.Linear(cfg.lang_dim, 2 * sum(cfg.cnn_channels))
            nn.init.zeros_(self.film_proj.weight)
            nn.init.zeros_(self.film_proj.bias)

    def forward(
        self, images: Tensor, joint_position: Tensor, joint_velocity: Tensor, tokens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``images``: uint8 [B*C, H, W, 3], cameras of one observation consecutive, in the
        bundle's camera order; ``joint_*``: float32 [B, n] normalised; ``tokens``: int64 [B, L].
        Returns ``o`` [B, latent_dim] and ``l`` [B, lang_dim]."""
        cfg = self.cfg
        lang = self._instruction(tokens)
        feats = self.cam_proj(self._camera_maps(images, lang).flatten(1))  # [B*C, camera_dim]
        feats = F.relu(feats.reshape(-1, cfg.n_cameras, cfg.camera_dim) + self.cam_embed)
        joints = self.joint_mlp(torch.cat([joint_position, joint_velocity], dim=-1))
        o = self.norm(self.fuse(torch.cat([feats.flatten(1), joints], dim=-1)))
        return o, lang

    def _camera_maps(self, images: Tensor, lang: Tensor) -> Tensor:
        """What ``cam_proj`` reads: the CNN's last feature map [B*C, ch, h, w] or, with
        keypoints, each keypoint's expected (x, y) in [-1, 1] [B*C, K, 2] (x along the image
        width). ``images`` uint8 [B*C, H, W, 3]; ``lang`` [B, lang_dim] (read with FiLM)."""
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - _PIXEL_MEAN) * _PIXEL_SCALE
        maps = self._film_cnn(x, lang) if self.cfg.film else self.cnn(x)
        if not self.cfg.keypoints:
            return maps
        # [B*C, K, H*W] softmax over positions -> expected (x, y) per keypoint.
        weights = torch.softmax(self.keypoint_maps(maps).flatten(2), dim=-1)
        return weights @ self.pixel_xy

    def _instruction(self, tokens: Tensor) -> Tensor:
        """``l`` [B, lang_dim] from token ids [B, L]."""
        cfg = self.cfg
        mask = (tokens != 0).to(torch.float32).unsqueeze(-1)  # PAD_ID == 0
        emb = self.token_embed(tokens) * mask
        if cfg.lang_layers:
            x = emb + self.token_pos[: tokens.shape[1]]
            # Padding keys get -1e4 before the softmax: no query attends to them.
            bias = (mask.squeeze(-1) - 1.0).unsqueeze(1).unsqueeze(1) * 1e4  # [B, 1, 1, L]
            for block in self.lang_blocks:
                x = block(x, bias)
            emb = x * mask
        pooled = emb.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.lang_norm(self.lang_proj(pooled))

    def _film_cnn(self, x: Tensor, lang: Tensor) -> Tensor:
        """The CNN with each conv's output scaled by (1 + gamma) and shifted by beta, both from
        the instruction, before its ReLU. ``x`` [B*C, 3, H, W], ``lang`` [B, lang_dim]."""
        n_cam = self.cfg.n_cameras
        params = self.film_proj(lang)  # [B, 2 * sum(channels)]
        params = params.unsqueeze(1).expand(-1, n_cam, -1).reshape(-1, params.shape[-1])
        start = 0
        for conv, act in zip(self.cnn[0::2], self.cnn[1::2], strict=True):
            c = conv.out_channels
            gamma = params[:, start : start + c, None, None]
            beta = params[:, start + c : start + 2 * c, None, None]
            start += 2 * c
            x = act(conv(x) * (1.0 + gamma) + beta)
        return x


class WorldModel(nn.Module):
    """``o``, ``l`` -> future latents [B, len(horizons), latent_dim] and value [B, 1] in (-1, 0).

    One MLP trunk with one joint head (the paper's state+value variant): the future latents are
    predicted as residuals from ``o``; the value is ``-sigmoid(.)`` so it lies in (-1, 0) like
    the normalised returns it is trained on.
    """

    def __init__(self, cfg: RampConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_future = len(cfg.horizons)
        self.trunk = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.lang_dim, cfg.wm_hidden), nn.GELU(),
            nn.Linear(cfg.wm_hidden, cfg.wm_hidden), nn.GELU(),
        )
        self.head = nn.Linear(cfg.wm_hidden, n_future * cfg.latent_dim + 1)

    def forward(self, obs_latent: Tensor, lang: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        n_future = len(cfg.horizons)
        out = self.head(self.trunk(torch.cat([obs_latent, lang], dim=-1)))
        delta = out[:, : n_future * cfg.latent_dim].reshape(-1, n_future, cfg.latent_dim)
        future = obs_latent.unsqueeze(1) + delta
        value = -torch.sigmoid(out[:, n_future * cfg.latent_dim :])
        return future, value


class _Attention(nn.Module):
    """Multi-head attention written out in matmuls and softmax: exports to plain ONNX MatMul /
    Softmax that ONNX Runtime quantizes and TensorRT fuses, with no fused-kernel surprises."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(d // heads)

    def forward(self, x: Tensor, ctx: Tensor, bias: Tensor | None = None) -> Tensor:
        """``bias`` (optional, broadcast to [B, heads, n, m]) is added to the attention logits."""
        b, n, d = x.shape
        m = ctx.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).reshape(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) * self.scale
        if bias is not None:
            logits = logits + bias
        att = torch.softmax(logits, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class _EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (self-attention with an additive mask, then an MLP)."""

    def __init__(self, d: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = _Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(),
                                 nn.Linear(mlp_ratio * d, d))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        y = self.n1(x)
        x = x + self.att(y, y, bias)
        return x + self.mlp(self.n2(x))


class _DecoderBlock(nn.Module):
    """Pre-norm transformer decoder block: self-attention among the action queries (keeps the
    chunk coherent over time), cross-attention to the context tokens, then an MLP."""

    def __init__(self, d: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n1, self.n2, self.n3, self.nc = (nn.LayerNorm(d) for _ in range(4))
        self.self_att = _Attention(d, heads)
        self.cross_att = _Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(),
                                 nn.Linear(mlp_ratio * d, d))

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        y = self.n1(x)
        x = x + self.self_att(y, y)
        x = x + self.cross_att(self.n2(x), self.nc(ctx))
        return x + self.mlp(self.n3(x))


class Policy(nn.Module):
    """Action chunk from ``o``, ``l``, world-model tokens ``z`` and advantage indicator ``I``.

    Head: a small transformer decoder ("transformer-lite"), not a chunked MLP. Learned action
    queries self-attend and cross-attend to seven context tokens: ``o``, ``l``, the four
    projected future latents ``z`` (each with its horizon embedding) and an ``I`` token; a
    linear layer then decodes each query into ``action_patch`` consecutive steps of joint
    targets (5 steps = 0.1 s at 50 Hz, so 10 queries make the 50-step chunk). Why: the
    conditioning is a *set of tokens*, which is exactly what RAMP adds to a policy, and masking
    ``z`` (efficient mode) is then swapping four tokens for a learned mask token, not zeroing
    slices of one flattened input vector; the queries share weights across the chunk, and
    self-attention among them keeps consecutive patches consistent. Patches of 5 steps rather
    than one query per step cut the decoder's work fivefold (neighbouring 20 ms actions of an
    arm are nearly collinear) and measured 2.8 ms -> 1.0 ms for the fp32 policy on the
    benchmark CPU.

    ``z_mask`` [B, 1]: 1 replaces ``z`` by the mask token (efficient mode; ``future`` is then
    ignored), 0 uses it. ``indicator`` [B, 1]: the advantage indicator, 1 at inference. Both are
    blended arithmetically, so the exported graph has no branch. Output: normalised absolute
    joint targets [B, chunk_size, n_joints].
    """

    def __init__(self, cfg: RampConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        n_future = len(cfg.horizons)
        self.obs_proj = nn.Linear(cfg.latent_dim, d)
        self.lang_proj = nn.Linear(cfg.lang_dim, d)
        self.z_proj = nn.Linear(cfg.latent_dim, d)
        self.horizon_embed = nn.Parameter(torch.randn(n_future, d) * 0.02)
        self.z_mask_token = nn.Parameter(torch.randn(n_future, d) * 0.02)
        self.indicator_embed = nn.Parameter(torch.randn(2, d) * 0.02)  # rows: I=0, I=1
        self.type_embed = nn.Parameter(torch.randn(3 + n_future, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(cfg.chunk_size // cfg.action_patch, d) * 0.02)
        self.blocks = nn.ModuleList(
            _DecoderBlock(d, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, cfg.action_patch * cfg.n_joints)

    def forward(
        self, obs_latent: Tensor, lang: Tensor, future: Tensor, z_mask: Tensor, indicator: Tensor
    ) -> Tensor:
        b = obs_latent.shape[0]
        m = z_mask.unsqueeze(-1)  # [B, 1, 1]
        z = (self.z_proj(future) + self.horizon_embed) * (1.0 - m) + self.z_mask_token * m
        i = indicator.unsqueeze(-1)
        i_tok = self.indicator_embed[1] * i + self.indicator_embed[0] * (1.0 - i)  # [B, 1, d]
        ctx = torch.cat(
            [self.obs_proj(obs_latent).unsqueeze(1), self.lang_proj(lang).unsqueeze(1), z, i_tok],
            dim=1,
        ) + self.type_embed
        x = self.queries.unsqueeze(0).expand(b, -1, -1)
        for block in self.blocks:
            x = block(x, ctx)
        # Each query token decodes ``action_patch`` consecutive steps: [B, H/p, p*n] -> [B, H, n].
        return self.action_head(self.norm(x)).reshape(b, self.cfg.chunk_size, self.cfg.n_joints)


class RampNetworks(nn.Module):
    """The three RAMP parts under one state dict (what the torch backend loads)."""

    def __init__(self, cfg: RampConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ObservationEncoder(cfg)
        self.world_model = WorldModel(cfg)
        self.policy = Policy(cfg)

    def forward(
        self, images: Tensor, joint_position: Tensor, joint_velocity: Tensor, tokens: Tensor,
        indicator: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Standard mode end to end: normalised actions and value."""
        o, lang = self.encoder(images, joint_position, joint_velocity, tokens)
        future, value = self.world_model(o, lang)
        zero = torch.zeros_like(indicator)
        return self.policy(o, lang, future, zero, indicator), value

    def graphs(self) -> dict[str, nn.Module]:
        """The export graphs, by name, in the order an engine runs them."""
        return {
            "encoder": EncoderGraph(self.encoder),
            "world_model": WorldModelGraph(self.world_model),
            "policy": PolicyGraph(self.policy),
        }

    def example_inputs(self) -> dict[str, tuple[Tensor, ...]]:
        """Batch-1 example inputs of each graph (shapes and dtypes are what matter)."""
        cfg = self.cfg
        n_future = len(cfg.horizons)
        return {
            "encoder": (
                torch.zeros(cfg.n_cameras, cfg.image_height, cfg.image_width, 3,
                            dtype=torch.uint8),
                torch.zeros(1, cfg.n_joints),
                torch.zeros(1, cfg.n_joints),
                torch.ones(1, cfg.max_tokens, dtype=torch.int64),
            ),
            "world_model": (torch.zeros(1, cfg.latent_dim), torch.zeros(1, cfg.lang_dim)),
            "policy": (
                torch.zeros(1, cfg.latent_dim),
                torch.zeros(1, cfg.lang_dim),
                torch.zeros(1, n_future, cfg.latent_dim),
                torch.zeros(1, 1),
                torch.ones(1, 1),
            ),
        }


# Graph IO names: the contract between export (models/export.py) and the engines.
GRAPH_INPUTS: dict[str, tuple[str, ...]] = {
    "encoder": ("images", "joint_position", "joint_velocity", "tokens"),
    "world_model": ("obs_latent", "lang"),
    "policy": ("obs_latent", "lang", "future", "z_mask", "indicator"),
}
GRAPH_OUTPUTS: dict[str, tuple[str, ...]] = {
    "encoder": ("obs_latent", "lang"),
    "world_model": ("future", "value"),
    "policy": ("actions",),
}


class EncoderGraph(nn.Module):
    """Export wrapper: the encoder with the graph's positional inputs and tuple outputs."""

    def __init__(self, encoder: ObservationEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor, joint_position: Tensor, joint_velocity: Tensor,
                tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(images, joint_position, joint_velocity, tokens)


class WorldModelGraph(nn.Module):
    """Export wrapper of :class:`WorldModel`."""

    def __init__(self, world_model: WorldModel) -> None:
        super().__init__()
        self.world_model = world_model

    def forward(self, obs_latent: Tensor, lang: Tensor) -> tuple[Tensor, Tensor]:
        return self.world_model(obs_latent, lang)


class PolicyGraph(nn.Module):
    """Export wrapper of :class:`Policy`."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs_latent: Tensor, lang: Tensor, future: Tensor, z_mask: Tensor,
                indicator: Tensor) -> Tensor:
        return self.policy(obs_latent, lang, future, z_mask, indicator)
