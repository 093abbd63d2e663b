"""The one engine interface: an observation in, an action chunk (and the value) out.

:class:`Engine` keeps everything backends share: checking the observation against the bundle's
IO spec, normalising it into preallocated buffers, running the graphs in order (world model then
policy in standard mode; the policy alone, with the world-model tokens masked, in efficient
mode), de-normalising the actions and timing the call. A backend fills in only
:meth:`Engine._run` (one graph, numpy in and out) and, if it holds resources, :meth:`Engine._close`.
"""

from __future__ import annotations

import abc
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from ramp_edge.errors import EdgeError

if TYPE_CHECKING:
    from ramp_edge.bundle import Bundle

__all__ = [
    "ChunkPrediction",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "EngineOptions",
    "EngineUnavailableError",
    "Mode",
    "Observation",
    "ObservationError",
]

Mode = Literal["standard", "efficient"]


class EngineError(EdgeError, RuntimeError):
    """A backend failed while loading or running a bundle's graphs."""


class EngineUnavailableError(EngineError):
    """The backend cannot run on this machine (package missing, no GPU); the message says why."""


class EngineClosedError(EngineError):
    """``predict`` was called on a closed engine."""


class ObservationError(EdgeError, ValueError):
    """An observation does not match the bundle's IO spec (camera names, shapes, dtypes)."""


@dataclass(frozen=True)
class Observation:
    """What the networks see at one instant, in the robot's joint order.

    ``images``: one uint8 array per camera name, shape (H, W, 3), RGB; ``joint_position`` and
    ``joint_velocity``: float32 [n] in each joint's unit (rad or m, per s for velocity);
    ``tokens``: int64 [L] from the bundle's tokenizer.
    """

    images: Mapping[str, np.ndarray]
    joint_position: np.ndarray
    joint_velocity: np.ndarray
    tokens: np.ndarray


@dataclass(frozen=True)
class ChunkPrediction:
    """One engine call's result.

    ``actions``: float32 [H, n], absolute joint targets in the robot's joint order and units
    (a new array the caller owns); ``value``: the world model's value in (-1, 0), None in
    efficient mode (the world model did not run); ``latency_ms``: wall time of the call,
    normalisation and de-normalisation included.
    """

    actions: np.ndarray
    value: float | None
    latency_ms: float


@dataclass(frozen=True)
class EngineOptions:
    """Settings every backend accepts; a backend ignores the ones that mean nothing to it.

    ``threads``: intra-op threads (None: the library's default). For torch this sets the
    process-wide ``torch.set_num_threads``. ``cache_dir``: where backends that build on the
    device (TensorRT) keep what they built. ``providers``: ONNX Runtime execution providers
    (None: CPU).
    """

    threads: int | None = None
    cache_dir: str | None = None
    providers: tuple[str, ...] | None = None


class Engine(abc.ABC):
    """Runs a bundle's three graphs (encoder, world model, policy) with one backend.

    Subclasses set :attr:`backend` (the name in the registry and in the bundle's manifest),
    load the graphs in ``__init__`` after calling ``super().__init__``, and implement
    :meth:`_run`. An engine is used by one thread at a time (the inference thread). ``close()``
    is idempotent; the engine is a context manager; an engine dropped without ``close()`` warns.
    """

    backend: ClassVar[str] = ""

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        self._closed = True  # until fully constructed, so __del__ stays quiet on a failed init
        self.bundle = bundle
        self.options = options or EngineOptions()
        self.entry = bundle.backend(self.backend)
        m = bundle.manifest
        norm = m.normalization
        self._cameras = m.camera_names
        self._image_shape = m.image_shape
        self._n = len(m.joint_names)
        self._h = m.chunk_size
        self._n_tokens = int(m.tokenizer["max_length"])
        self._pos_mean, self._pos_inv_std = norm.position_mean, 1.0 / norm.position_std
        self._vel_mean, self._vel_inv_std = norm.velocity_mean, 1.0 / norm.velocity_std
        self._act_mean, self._act_std = norm.action_mean, norm.action_std
        # Inputs are written into these buffers every call (no per-call allocation for them).
        self._images = np.zeros((len(self._cameras), *self._image_shape), dtype=np.uint8)
        self._pos = np.zeros((1, self._n), dtype=np.float32)
        self._vel = np.zeros((1, self._n), dtype=np.float32)
        self._tokens = np.zeros((1, self._n_tokens), dtype=np.int64)
        self._indicator = np.ones((1, 1), dtype=np.float32)
        self._z_masked = np.ones((1, 1), dtype=np.float32)
        # A policy trained without the world model's tokens (behaviour cloning, RECAP) gets
        # its mask token in standard mode too: tokens it never saw would steer it anywhere.
        self._z_standard = (np.zeros((1, 1), dtype=np.float32) if m.policy_uses_world_model
                            else self._z_masked)
        horizons, latent = m.model_config.get("horizons"), m.model_config.get("latent_dim")
        if not isinstance(horizons, list) or not horizons or type(latent) is not int:
            from ramp_edge.bundle import BundleError

            raise BundleError(f"bundle {bundle.path}: model.config needs 'horizons' (a list) and "
                              f"'latent_dim' (an integer)")
        # Efficient mode feeds the policy this (ignored) stand-in for the world model's output.
        self._no_future = np.zeros((1, len(horizons), latent), dtype=np.float32)
        self._closed = False

    # -- what backends implement -----------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None if this backend can run on this machine, else why not (one line)."""
        return None

    @abc.abstractmethod
    def _run(self, graph: str, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Run graph ``graph`` ("encoder", "world_model" or "policy") on batch-1 numpy inputs
        in the order of ``models.networks.GRAPH_INPUTS``; return its outputs as numpy arrays
        in the order of ``GRAPH_OUTPUTS``."""

    def _close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to free
        """Release the backend's resources (called once)."""

    def describe(self) -> str:
        """One line: backend, precision and runtime details, for logs and the CLI."""
        return f"{self.backend} ({self.entry.precision})"

    # -- public ----------------------------------------------------------------------------

    def predict(self, obs: Observation, mode: Mode = "standard", *,
                indicator: float = 1.0) -> ChunkPrediction:
        """One action chunk for ``obs``.

        ``mode="standard"`` runs the world model, then the policy conditioned on its future
        latents (a bundle whose manifest says ``policy_uses_world_model: false`` runs the world
        model for the value only: its policy sees the mask token, as in training);
        ``"efficient"`` skips the world model (the policy sees its learned mask token
        instead, and ``value`` is None). ``indicator`` is the advantage indicator I (1 at
        inference, as RAMP prescribes). Raises ObservationError for an observation that does
        not match the bundle, ValueError for an unknown mode, EngineClosedError after close(),
        EngineError if the backend fails.
        """
        if self._closed:
            raise EngineClosedError(f"engine {self.backend} is closed")
        if mode not in ("standard", "efficient"):
            raise ValueError(f"mode must be 'standard' or 'efficient', not {mode!r}")
        t0 = time.perf_counter()
        self._fill(obs)
        self._indicator[0, 0] = indicator
        try:
            obs_latent, lang = self._run(
                "encoder", (self._images, self._pos, self._vel, self._tokens))
            if mode == "standard":
                future, value_arr = self._run("world_model", (obs_latent, lang))
                z_mask = self._z_standard
                value: float | None = float(np.asarray(value_arr).reshape(-1)[0])
            else:
                future, z_mask, value = self._no_future, self._z_masked, None
            (actions_n,) = self._run("policy", (obs_latent, lang, future, z_mask,
                                                self._indicator))
        except EdgeError:
            raise
        except Exception as err:  # a backend's own error type: wrap it, keep the cause
            raise EngineError(f"engine {self.backend} failed: {type(err).__name__}: {err}") \
                from err
        actions_n = np.asarray(actions_n)
        if actions_n.shape != (1, self._h, self._n):
            raise EngineError(f"engine {self.backend} returned actions of shape "
                              f"{actions_n.shape}, expected {(1, self._h, self._n)}")
        actions = (actions_n[0] * self._act_std + self._act_mean).astype(np.float32, copy=False)
        return ChunkPrediction(actions, value, (time.perf_counter() - t0) * 1000.0)

    def close(self) -> None:
        """Release the engine's resources; later calls do nothing."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"engine {self.backend} was not closed", ResourceWarning, stacklevel=2)
            self.close()

    # -- helpers ---------------------------------------------------------------------------

    def _fill(self, obs: Observation) -> None:
        """Check ``obs`` against the IO spec and write it, normalised, into the buffers."""
        images = obs.images
        if set(images) != set(self._cameras):
            raise ObservationError(f"observation cameras {sorted(images)} do not match the "
                                   f"bundle's {list(self._cameras)}")
        for i, cam in enumerate(self._cameras):
            img = images[cam]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or \
                    img.shape != self._image_shape:
                raise ObservationError(
                    f"observation image {cam!r} is {_describe(img)}, the bundle expects uint8 "
                    f"{self._image_shape}")
            self._images[i] = img
        for name, arr, out, mean, inv_std in (
            ("joint_position", obs.joint_position, self._pos, self._pos_mean, self._pos_inv_std),
            ("joint_velocity", obs.joint_velocity, self._vel, self._vel_mean, self._vel_inv_std),
        ):
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.shape != (self._n,):
                raise ObservationError(f"observation {name} is {_describe(arr)}, the bundle "
                                       f"expects float32 ({self._n},) in its joint order")
            np.subtract(arr, mean, out=out[0], casting="same_kind")
            out[0] *= inv_std
        tokens = obs.tokens
        if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu" or \
                tokens.shape != (self._n_tokens,):
            raise ObservationError(f"observation tokens are {_describe(tokens)}, the bundle "
                                   f"expects int64 ({self._n_tokens},) from its tokenizer")
        self._tokens[0] = tokens


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` of a foreign error, for one-line messages."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__
