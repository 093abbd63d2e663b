"""``ramp-edge train wm|policy|continual|bc|recap|export``: RAMP training on the training host.

One process: ``ramp-edge train wm --config run.toml --out runs/r1``. Several DDP ranks:
``torchrun --nproc-per-node 4 $(which ramp-edge) train wm --config run.toml --out runs/r1``
(gloo on CPU, NCCL on GPUs). Progress goes to stderr; ``--json`` prints the result on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(
    help="Train RAMP models from recorded episodes (world model, policy, continual, baselines) "
         "and export a run to a bundle.",
    no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", help="The run's TOML config.")]
OutOpt = Annotated[Path, typer.Option(
    "--out", help="Run directory (created; an interrupted stage resumes from it).")]
BundleOpt = Annotated[Path | None, typer.Option(
    "--bundle", help="After the stage, export the run to a bundle at this directory.")]
BackendOpt = Annotated[list[str] | None, typer.Option(
    "--backend", help="Backend(s) the bundle gets, repeatable: torch-eager, torch-export, "
                      "onnx-fp32, onnx-int8, tensorrt-fp16, tensorrt-int8 (default: all "
                      "buildable here).")]
StopOpt = Annotated[int | None, typer.Option(
    "--stop-at", help="Stop each phase at this step with a checkpoint (time-limited jobs); "
                      "the same command without it resumes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="The result as JSON on stdout.")]

_HELP = {
    "wm": "Pretrain the world model (future latents + value, or value only: wm.variant).",
    "policy": "Train the policy conditioned on the world model (needs `train wm` in --out).",
    "continual": "Retrain the world model and fine-tune the policy on rollouts + base data.",
    "bc": "Baseline: behaviour cloning (no world-model tokens, indicator fixed).",
    "recap": "Baseline: RECAP (value model + advantage indicator, no world-model tokens).",
}


def _train(stage: str, config: Path, out: Path, bundle: Path | None,
           backends: list[str] | None, init: Path | None, stop_at: int | None,
           as_json: bool) -> None:
    from models.training.config import load_config
    from models.training.run_files import export_run
    from models.training.stages import run_stage

    cfg, text = load_config(config)
    model = run_stage(stage, cfg, text, out, init=init, stop_at=stop_at)
    result: dict = {"stage": stage, "run_dir": str(out), "finished": model is not None,
                    "model": None if model is None else str(model)}
    main_rank = os.environ.get("RANK", "0") == "0"
    if model is not None and bundle is not None and main_rank:
        result["bundle"] = str(export_run(out, bundle, backends=backends))
        print(f"bundle written to {result['bundle']}", file=sys.stderr)
    if as_json and main_rank:
        print(json.dumps(result))
    if model is None and main_rank:
        print(f"{stage}: stopped early; run the same command to resume", file=sys.stderr)


def _command(stage: str):
    def command(config: ConfigOpt, out: OutOpt, bundle: BundleOpt = None,
                backend: BackendOpt = None, stop_at: StopOpt = None,
                as_json: JsonOpt = False) -> None:
        _train(stage, config, out, bundle, backend, None, stop_at, as_json)

    command.__doc__ = _HELP[stage]
    return command


for _stage in ("wm", "policy", "bc", "recap"):
    train_app.command(_stage)(_command(_stage))


@train_app.command("continual")
def continual(
    config: ConfigOpt,
    out: OutOpt,
    init: Annotated[Path | None, typer.Option(
        "--init", help="The run to continue from (default: continual.init in the config).")]
    = None,
    bundle: BundleOpt = None,
    backend: BackendOpt = None,
    stop_at: StopOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrain the world model and fine-tune the policy on rollouts + base data."""
    _train("continual", config, out, bundle, backend, init, stop_at, as_json)


@train_app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a finished stage.")],
    out: Annotated[Path, typer.Argument(help="The bundle directory to write.")],
    backend: BackendOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a run's trained networks to a model bundle."""
    from models.training.run_files import export_run

    path = export_run(run_dir, out, backends=backend, overwrite=overwrite)
    if as_json:
        print(json.dumps({"bundle": str(path)}))
    print(f"bundle written to {path}", file=sys.stderr)


if __name__ == "__main__":  # `python -m models.cli_train ...`: the same commands, lighter start
    from firmware_bridge.cli import run_guarded

    run_guarded(train_app, "ramp-edge train")
