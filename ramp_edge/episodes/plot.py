"""Review plots of one episode as a PNG: per joint the measured position (solid) and the command
sent (dashed), the world model's value prediction, and loop lateness, against episode time,
with human takeovers shaded on every panel. Needs matplotlib (the ``review`` extra); drawn
with the Agg backend, so no display is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramp_edge.episodes.reader import EpisodeReader
from ramp_edge.errors import EdgeError

# Takeover shading: opaque and drawn beneath the data, so its exact colour marks it in the PNG.
TAKEOVER_COLOR = "#ffd6a5"
TAKEOVER_RGB = (0xFF, 0xD6, 0xA5)
POSITION_COLOR = "#1f5fa8"
COMMAND_COLOR = "#d1495b"
DPI = 100
WIDTH_IN = 12.0
PANEL_IN = 1.25  # height of one joint panel; value and lateness panels get 1.5x


class PlotUnavailableError(EdgeError, ImportError):
    """matplotlib is not installed (the ``review`` extra)."""


class PlotWriteError(EdgeError, OSError):
    """The PNG cannot be written where asked."""


@dataclass(frozen=True)
class PlotResult:
    path: Path
    width_px: int
    height_px: int
    takeovers: int


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise PlotUnavailableError(
            "episode plots need matplotlib: pip install 'ramp-edge[review]'") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_episode(path: str | Path, out: str | Path, *, title: str | None = None) -> PlotResult:
    """Draw the episode file at ``path`` into the PNG ``out`` (parent directories created).
    Returns where it went, its size in pixels and how many takeovers were shaded. Raises
    :class:`PlotUnavailableError` without matplotlib, :class:`PlotWriteError` when ``out``
    cannot be written and the reader's errors for a file that cannot be read."""
    plt = _pyplot()
    out = Path(out)
    with EpisodeReader(path) as ep:
        st = ep.steps()
        names = ep.joint_names
        segments = ep.takeover_segments() if len(st) else []
        head = title or (f"{ep.episode_id}  outcome {ep.outcome or '?'}  "
                         f"task {ep.task or '?'}: {ep.instruction or ''}")
    t0 = float(st.t_s[0]) if len(st) else 0.0
    t = st.t_s - t0
    joints = st.command.shape[1] if st.command.ndim == 2 else 0
    ratios = [1.0] * joints + [1.5, 1.5]
    fig, axes = plt.subplots(len(ratios), 1, sharex=True, squeeze=False,
                             figsize=(WIDTH_IN, PANEL_IN * sum(ratios) + 1.0),
                             gridspec_kw={"height_ratios": ratios, "hspace": 0.12})
    axes = axes[:, 0]
    try:
        for ax in axes:
            for a, b in segments:
                ax.axvspan(a - t0, b - t0, color=TAKEOVER_COLOR, lw=0, zorder=0)
            ax.grid(True, lw=0.4, alpha=0.5)
            ax.tick_params(labelsize=7)
        for j in range(joints):
            ax = axes[j]
            ax.plot(t, st.position[:, j], color=POSITION_COLOR, lw=1.0)
            ax.plot(t, st.command[:, j], color=COMMAND_COLOR, lw=0.9, ls="--")
            name = names[j] if j < len(names) else f"joint_{j}"
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax_v, ax_l = axes[joints], axes[joints + 1]
        ax_v.plot(t, st.value, color="#2a9d8f", lw=1.0)
        ax_v.set_ylabel("value", rotation=0, ha="right", va="center", fontsize=8)
        lat = st.lateness_ms
        ax_l.plot(t, lat, color="#6d597a", lw=0.6)
        finite = lat[np.isfinite(lat)]
        if finite.size:
            ax_l.axhline(float(np.percentile(finite, 99)), color="#6d597a", lw=0.8, ls=":")
        ax_l.set_ylabel("lateness\nms", rotation=0, ha="right", va="center", fontsize=8)
        ax_l.set_xlabel("episode time (s)", fontsize=8)
        _legend(fig, bool(segments))
        fig.suptitle(head, fontsize=9, x=0.01, ha="left")
        fig.subplots_adjust(left=0.11, right=0.99, top=1 - 0.55 / fig.get_figheight(),
                            bottom=0.45 / fig.get_figheight())
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=DPI, format="png")
        except OSError as err:
            raise PlotWriteError(f"cannot write the plot to {out}: {err}") from err
        w, h = (round(float(v) * DPI) for v in fig.get_size_inches())
    finally:
        plt.close(fig)
    return PlotResult(out, w, h, len(segments))


def _legend(fig, takeover: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=POSITION_COLOR, lw=1.0, label="position"),
               Line2D([], [], color=COMMAND_COLOR, lw=0.9, ls="--", label="command sent"),
               Line2D([], [], color="#6d597a", lw=0.8, ls=":", label="lateness p99")]
    if takeover:
        handles.append(Patch(color=TAKEOVER_COLOR, label="human takeover"))
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=7,
               frameon=False)
