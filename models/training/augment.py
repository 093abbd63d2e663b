"""Image augmentation for training: random shifts of the observation's camera images.

An image policy trained on a few dozen demonstrations learns where things are pixel by pixel
and fails on the next scene; shifting each training image by a few pixels (edge padding, then a
random crop back to the original size: the augmentation of DrQ and of most image-based
behaviour-cloning recipes) makes it learn positions relative to what it sees. At inference the
images go in unshifted.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["random_shift"]


def random_shift(images: torch.Tensor, max_px: int, rng: np.random.Generator) -> torch.Tensor:
    """``images`` [N, H, W, C] (any dtype, any device) each shifted by a random whole-pixel
    offset in ``-max_px..max_px`` along both axes, the edge pixels repeated where the shift
    uncovers the border (the same as padding by ``max_px`` with the edge and cropping back).
    ``max_px == 0`` returns ``images`` unchanged."""
    if max_px < 0:
        raise ValueError("max_px must be >= 0")
    if max_px == 0 or images.shape[0] == 0:
        return images
    n, h, w = images.shape[:3]
    dev = images.device
    dy = torch.from_numpy(rng.integers(-max_px, max_px + 1, n)).to(dev)
    dx = torch.from_numpy(rng.integers(-max_px, max_px + 1, n)).to(dev)
    rows = (torch.arange(h, device=dev)[None, :] + dy[:, None]).clamp_(0, h - 1)
    cols = (torch.arange(w, device=dev)[None, :] + dx[:, None]).clamp_(0, w - 1)
    idx = torch.arange(n, device=dev)[:, None, None]
    return images[idx, rows[:, :, None], cols[:, None, :]]
