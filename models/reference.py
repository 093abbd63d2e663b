"""The reference bundle: deterministic, randomly initialised RAMP networks for plumbing.

Until a trained bundle ships, the controller loads this one by default, so every part of the
robot side (engines, probe checks, chunk scheduling, recording) runs end to end. Its actions are
meaningless: the manifest says ``"trained": false`` and the controller should treat it as
plumbing only.

Same arguments (joint names, limits, cameras, seed) give the same weights and the same probe
outputs on the same software stack: the networks are initialised from ``torch.manual_seed(seed)``
in a fixed order, and calibration, probe and evaluation observations come from seeded numpy
generators. Building takes seconds on a 2-core CPU (most of it the ONNX export).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from models.export import ExportError, JointStats, export_bundle
from models.language import Tokenizer
from models.networks import RampConfig, RampNetworks

__all__ = ["DEFAULT_CAMERAS", "ExportError", "build_reference_bundle", "reference_config"]

DEFAULT_CAMERAS: tuple[str, ...] = ("scene", "wrist")


def reference_config(n_joints: int, n_cameras: int = len(DEFAULT_CAMERAS),
                     image_hw: tuple[int, int] = (96, 96)) -> RampConfig:
    """The reference network sizes for a robot with ``n_joints`` joints and ``n_cameras``
    cameras of ``image_hw`` (height, width) pixels."""
    tok = Tokenizer()
    return RampConfig(n_cameras=n_cameras, image_height=image_hw[0], image_width=image_hw[1],
                      n_joints=n_joints, vocab_size=tok.vocab_size, max_tokens=tok.max_length)


def build_reference_bundle(
    out_dir: str | os.PathLike[str],
    joint_names: Sequence[str],
    seed: int = 0,
    *,
    joint_limits: Sequence[tuple[float, float]] | None = None,
    camera_names: Sequence[str] = DEFAULT_CAMERAS,
    image_hw: tuple[int, int] = (96, 96),
    backends: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Build the reference bundle for a robot with ``joint_names`` (in its joint order) at
    ``out_dir``; returns the bundle's path.

    ``joint_limits`` (min, max) per joint, in each joint's unit, set the normalisation
    (mid-range, range / 4) and let accuracy be stated as a fraction of the range; without them
    mean 0 / std 1 is used. ``camera_names``: the cameras in the order the bundle feeds them,
    each ``image_hw`` (height, width) RGB pixels. ``backends`` defaults to everything this
    machine can build (ONNX ones need the ``onnx`` extra); an INT8 graph that misses the
    accuracy bar is left out and the manifest says why, rather than failing the build.

    Raises ExportError, BundleError (``out_dir`` exists and not ``overwrite``), ValueError
    (bad names or limits).
    """
    names = tuple(joint_names)
    if not names or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"joint names must be non-empty and distinct: {list(names)}")
    joints = JointStats.from_limits(names, joint_limits)
    cfg = reference_config(len(names), len(camera_names), tuple(image_hw))
    # Networks come out of one seeded RNG in construction order: same seed, same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        networks = RampNetworks(cfg).eval()
    return export_bundle(
        networks,
        out_dir,
        joints=joints,
        camera_names=tuple(camera_names),
        tokenizer=Tokenizer(vocab_size=cfg.vocab_size, max_length=cfg.max_tokens),
        provenance={
            "kind": "random init, untrained",
            "trained": False,
            "seed": seed,
            "builder": "models.reference.build_reference_bundle",
        },
        name=f"reference-seed{seed}",
        backends=backends,
        seed=seed,
        int8_failure="drop",
        overwrite=overwrite,
    )
