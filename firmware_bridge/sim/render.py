"""Offscreen camera images of the simulated robot: uint8 RGB numpy arrays, and PNG files.

MuJoCo chooses its OpenGL backend when it is first imported, from ``MUJOCO_GL``; this package
defaults it to ``egl`` (headless; Mesa's llvmpipe renders on machines without a GPU). Use
``MUJOCO_GL=osmesa`` for pure software OSMesa. System packages (Debian/Ubuntu): ``libegl1
libgl1 libegl-mesa0`` (+ ``libgl1-mesa-dri`` for llvmpipe) for EGL, ``libosmesa6`` for OSMesa.

If MuJoCo was imported before this package (so it picked its backend from an unset
``MUJOCO_GL``, usually GLFW, which needs a display), the renderer still builds its context with
the backend ``MUJOCO_GL`` names now. A renderer owns a GL context bound to the thread that
created it: create and use it on one thread. It reads the plant under the plant's lock, so the
servo thread may keep stepping.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np

from firmware_bridge.sim.errors import RenderError
from firmware_bridge.sim.plant import MujocoPlant
from firmware_bridge.sim.scene import import_mujoco

CAMERAS: tuple[str, ...] = ("scene", "wrist")

_GL_HINT = (
    "install libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri (MUJOCO_GL=egl) or libosmesa6 "
    "(MUJOCO_GL=osmesa)"
)


class SimRenderer:
    """Renders the plant's cameras at ``width`` x ``height`` pixels.

    Raises :class:`RenderError` (one line, with what to install) when no OpenGL context can be
    made, or the image size exceeds the model's offscreen buffer (640 x 480).
    """

    def __init__(self, plant: MujocoPlant, width: int = 96, height: int = 96) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be positive")
        mujoco = import_mujoco()
        self._plant = plant
        self.width, self.height = width, height
        self._renderer = None
        backend = os.environ.get("MUJOCO_GL", "(unset)")
        try:
            with _context_class_for(backend):
                self._renderer = mujoco.Renderer(plant.model, height=height, width=width)
        except RenderError:
            raise
        except ValueError as err:  # larger than the offscreen buffer
            raise RenderError(f"cannot render {width}x{height}: {err}".splitlines()[0]) from err
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RenderError(
                f"offscreen rendering unavailable with MUJOCO_GL={backend} ({first}); {_GL_HINT}"
            ) from err
        self._cam_ids = {name: plant.model.camera(name).id for name in CAMERAS}

    def render(self, camera: str) -> np.ndarray:
        """One frame from ``camera`` ("scene" or "wrist"): a new (height, width, 3) uint8 array.

        Raises ``KeyError`` for an unknown camera, :class:`RenderError` if GL fails or the
        renderer was closed.
        """
        if self._renderer is None:
            raise RenderError("renderer is closed")
        cam = self._cam_ids[camera]
        with self._plant.locked():
            self._renderer.update_scene(self._plant.data, camera=cam)
        try:
            return self._renderer.render()
        except Exception as err:
            raise RenderError(f"rendering camera {camera!r} failed: {err}") from err

    def render_all(self) -> dict[str, np.ndarray]:
        """One frame per camera, all from the same physics state."""
        if self._renderer is None:
            raise RenderError("renderer is closed")
        out: dict[str, np.ndarray] = {}
        with self._plant.locked():
            for name, cam in self._cam_ids.items():
                self._renderer.update_scene(self._plant.data, camera=cam)
                out[name] = self._renderer.render()
        return out

    def close(self) -> None:
        """Free the GL context. Idempotent."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            warnings.warn("SimRenderer was not closed", ResourceWarning, stacklevel=1)
            self.close()


def _gl_context_module():
    for name in ("mujoco.rendering.classic.gl_context", "mujoco.gl_context"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


@contextmanager
def _context_class_for(backend: str) -> Iterator[None]:
    """Make ``mujoco.Renderer`` create its context with ``backend`` (egl or osmesa) even if
    MuJoCo chose another one when it was imported; restores MuJoCo's choice afterwards."""
    module = {"egl": "mujoco.egl", "osmesa": "mujoco.osmesa"}.get(backend.lower())
    gl = _gl_context_module()
    current = getattr(gl, "GLContext", None) if gl is not None else None
    if module is None or gl is None or getattr(current, "__module__", "").startswith(module):
        yield
        return
    try:
        wanted = importlib.import_module(module).GLContext
    except (ImportError, OSError, AttributeError) as err:
        raise RenderError(
            f"offscreen rendering unavailable with MUJOCO_GL={backend} ({err}); {_GL_HINT}"
        ) from err
    gl.GLContext = wanted
    try:
        yield
    finally:
        gl.GLContext = current


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a PNG (atomically: temp file, then rename).

    Returns the path written. Raises ``ValueError`` for a wrong shape or dtype,
    :class:`RenderError` if Pillow is not installed.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    try:
        from PIL import Image
    except ImportError as err:
        raise RenderError("writing PNG files needs Pillow: pip install pillow") from err
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(img, mode="RGB").save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
