"""PyTorch backends: eager (state dict + the network classes) and exported programs (.pt2).

Both run on the CPU in fp32 and are the reference the other backends are measured against.
``torch-eager`` rebuilds :class:`models.networks.RampNetworks` from the manifest's model config
and loads the state dict (``weights_only``: no pickled code runs); ``torch-export`` loads the
``torch.export`` programs, which need no model code at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ramp_edge.bundle import BundleError
from ramp_edge.engines.base import Engine, EngineOptions, first_line

if TYPE_CHECKING:
    from ramp_edge.bundle import Bundle

__all__ = ["TorchEagerEngine", "TorchExportEngine"]


class _TorchEngine(Engine):
    """Shared part: graphs are torch modules called under inference mode."""

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        super().__init__(bundle, options)
        if self.options.threads:
            torch.set_num_threads(self.options.threads)  # process-wide, as torch has it
        self._graphs: dict[str, torch.nn.Module] = {}

    def _run(self, graph: str, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            out = self._graphs[graph](*(torch.from_numpy(x) for x in inputs))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return tuple(t.numpy() for t in out)

    def describe(self) -> str:
        return (f"{self.backend} (torch {torch.__version__}, {self.entry.precision}, CPU, "
                f"{torch.get_num_threads()} threads)")

    def _close(self) -> None:
        self._graphs.clear()


class TorchEagerEngine(_TorchEngine):
    """The networks in eager PyTorch, from the bundle's state dict."""

    backend = "torch-eager"

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        super().__init__(bundle, options)
        from models.networks import RampConfig, RampNetworks

        m = bundle.manifest
        if m.model_family != "ramp":
            raise BundleError(f"bundle {bundle.path}: model family {m.model_family!r} is not "
                              f"one this code builds ('ramp')")
        try:
            cfg = RampConfig.from_dict(dict(m.model_config))
        except ValueError as err:
            raise BundleError(f"bundle {bundle.path}: model.config: {err}") from err
        paths = {bundle.artifact_path(rel) for rel in self.entry.artifacts.values()}
        if len(paths) != 1:
            raise BundleError(f"bundle {bundle.path}: backend {self.backend} needs one state "
                              f"dict for all graphs")
        path = paths.pop()
        net = RampNetworks(cfg)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except Exception as err:  # unpickling or shape errors, all meaning a bad artifact
            raise BundleError(f"bundle {bundle.path}: cannot load {path.name}: "
                              f"{first_line(err)}") from err
        net.eval()
        self._graphs = dict(net.graphs())


class TorchExportEngine(_TorchEngine):
    """The networks as ``torch.export`` programs (.pt2), one per graph."""

    backend = "torch-export"

    def __init__(self, bundle: Bundle, options: EngineOptions | None = None) -> None:
        super().__init__(bundle, options)
        for graph, rel in self.entry.artifacts.items():
            path = bundle.artifact_path(rel)
            try:
                self._graphs[graph] = torch.export.load(path).module()
            except Exception as err:
                raise BundleError(f"bundle {bundle.path}: cannot load exported program {rel}: "
                                  f"{first_line(err)}") from err
