"""What a run directory holds and how a finished run becomes a bundle.

``RUN_DIR/``: ``config.toml`` (the run's config, copied), ``model.pt`` (the trained
RampNetworks state dict with its RampConfig, JointStats, camera names, tokenizer spec and the
stages done, written atomically after each stage), ``checkpoints/<stage>-<phase>.pt``,
``metrics.jsonl`` + ``metrics/*.csv``, ``value_metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.export import JointStats, export_bundle
from models.language import Tokenizer
from models.networks import RampConfig, RampNetworks
from models.training.checkpoint import load_checkpoint, save_atomic
from models.training.config import TrainingError
from ramp_edge.bundle import Normalization

__all__ = ["MODEL_FILE", "RunModel", "export_run", "load_run_model", "save_run_model"]

MODEL_FILE = "model.pt"


@dataclass
class RunModel:
    """A run's networks and everything a bundle needs with them."""

    networks: RampNetworks
    joints: JointStats
    cameras: tuple[str, ...]
    tokenizer: Tokenizer
    stages: list[str]
    info: dict[str, Any]


def _joints_dict(j: JointStats) -> dict[str, Any]:
    n = j.normalization
    return {
        "names": list(j.names),
        "normalization": {k: getattr(n, k).tolist() for k in (
            "position_mean", "position_std", "velocity_mean", "velocity_std", "action_mean",
            "action_std")},
        "position_min": None if j.position_min is None else j.position_min.tolist(),
        "position_max": None if j.position_max is None else j.position_max.tolist(),
    }


def _joints_from(d: dict[str, Any]) -> JointStats:
    norm = Normalization(**{k: np.asarray(v, np.float32) for k, v in d["normalization"].items()})
    lo, hi = d.get("position_min"), d.get("position_max")
    return JointStats(tuple(d["names"]), norm,
                      None if lo is None else np.asarray(lo, np.float32),
                      None if hi is None else np.asarray(hi, np.float32))


def save_run_model(run_dir: str | Path, model: RunModel) -> Path:
    return save_atomic({
        "config": model.networks.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.networks.state_dict().items()},
        "joints": _joints_dict(model.joints),
        "cameras": list(model.cameras),
        "tokenizer": model.tokenizer.spec(),
        "stages": list(model.stages),
        "info": model.info,
    }, Path(run_dir) / MODEL_FILE)


def load_run_model(run_dir: str | Path) -> RunModel | None:
    """The model a run directory holds, or None when no stage has finished there."""
    data = load_checkpoint(Path(run_dir) / MODEL_FILE)
    if data is None:
        return None
    try:
        cfg = RampConfig.from_dict(data["config"])
        net = RampNetworks(cfg)
        net.load_state_dict(data["state_dict"])
        return RunModel(net, _joints_from(data["joints"]), tuple(data["cameras"]),
                        Tokenizer.from_spec(data["tokenizer"]), list(data["stages"]),
                        dict(data.get("info", {})))
    except (KeyError, ValueError, RuntimeError) as err:
        raise TrainingError(f"{Path(run_dir) / MODEL_FILE} is not a RAMP run model: {err}") \
            from err


def export_run(run_dir: str | Path, out_bundle: str | Path, *,
               backends: list[str] | None = None, overwrite: bool = False) -> Path:
    """Build a bundle at ``out_bundle`` from the model in ``run_dir`` (see
    :func:`models.export.export_bundle` for ``backends``); returns its path. Raises
    TrainingError when the run has no finished stage, ExportError/BundleError from export."""
    model = load_run_model(run_dir)
    if model is None:
        raise TrainingError(f"{run_dir} holds no trained model yet (run a stage first)")
    return export_bundle(
        model.networks.eval(), out_bundle, joints=model.joints, camera_names=model.cameras,
        tokenizer=model.tokenizer,
        provenance={"kind": "trained", "trained": True, "run_dir": str(Path(run_dir).resolve()),
                    "stages": model.stages, **model.info},
        name=f"{Path(run_dir).resolve().name}-{'+'.join(model.stages)}",
        backends=backends, int8_failure="drop", overwrite=overwrite,
        policy_uses_world_model=bool(model.info.get("policy_uses_world_model", True)),
    )
