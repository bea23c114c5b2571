"""How much each corruption changes images, the engine against a per-image port of the CIFAR-10-C
generator (``make_cifar_c.py``) with its own random draws: the mean absolute change per pixel
(8-bit levels) at every severity, and their ratio.

The port follows the generator line by line on uint8 HWC images (NumPy's global generator,
scipy's Gaussian for scikit-image's, OpenCV, PIL), for the corruptions whose behaviour was
fixed to the generator's: glass blur, spatter, pixelate and saturate (RGB and gray, the
generator's round trip on three equal channels seen as luma). The photos are crops of the two
photographs scikit-learn ships, at 32x32 and in 8 bits. Frost needs the generator's own
photographs, which cannot be fetched here: not measured.

    python benchmarks/fidelity_corruptions.py [--images 200] [--only spatter ...]
"""

from __future__ import annotations

import argparse
import colorsys

import cv2
import numpy as np
import scipy.ndimage as ndi
import torch
from PIL import Image
from uqbench.datamodules.corruptions import TABLES, corrupt
from uqbench.datamodules.corruptions.sheet import sample_photos

SIDE = 32


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's ``gaussian`` on an HWC (or HW) float image: spatial axes only."""
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else (sigma, sigma)
    return ndi.gaussian_filter(x, sigmas, mode="nearest", truncate=4.0)


def glass_blur(x: np.ndarray, c: tuple) -> np.ndarray:
    x = np.uint8(_gaussian(x / 255.0, c[0]) * 255)
    for _ in range(c[2]):
        for h in range(SIDE - c[1], c[1], -1):
            for w in range(SIDE - c[1], c[1], -1):
                dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(_gaussian(x / 255.0, c[0]), 0, 1) * 255


def spatter(x: np.ndarray, c: tuple) -> np.ndarray:
    x = np.array(x, dtype=np.float32) / 255.0
    liquid = _gaussian(np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        layer = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, kernel), (3, 3)).astype(np.float32)
        m = layer * dist
        m = m / np.max(m) * c[4]
        colour = np.array([175, 238, 238], np.float32) / 255
        return np.clip(x + m[..., None] * colour, 0, 1) * 255
    m = _gaussian(np.where(liquid > c[3], 1.0, 0.0).astype(np.float32), c[4])
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20], np.float32) / 255
    return np.clip(x * (1 - m[..., None]) + colour * m[..., None], 0, 1) * 255


def pixelate(x: np.ndarray, c: float) -> np.ndarray:
    image = Image.fromarray(x)
    small = image.resize((int(SIDE * c), int(SIDE * c)), Image.BOX)
    return np.asarray(small.resize((SIDE, SIDE), Image.BOX), dtype=np.float64)


def saturate(x: np.ndarray, c: tuple) -> np.ndarray:
    out = np.empty(x.shape, np.float64)
    for i in range(SIDE):
        for j in range(SIDE):
            h, s, v = colorsys.rgb_to_hsv(*(x[i, j] / 255.0))
            out[i, j] = colorsys.hsv_to_rgb(h, min(max(s * c[0] + c[1], 0), 1), v)
    return np.clip(out, 0, 1) * 255


PORTS = {"glass_blur": glass_blur, "spatter": spatter, "pixelate": pixelate, "saturate": saturate}


def _port_change(name: str, images: np.ndarray, severity: int, gray: bool) -> float:
    """Mean |generator(x) - x| in levels, the generator saving np.uint8 of its output."""
    params = TABLES["cifar"][name][severity - 1]
    np.random.seed(severity)
    changes = []
    for x in images:
        if gray:  # the engine's 1-channel output: the luma of the generator's RGB, in 8 bits
            y = PORTS[name](np.repeat(x, 3, axis=2), params) @ np.array([0.299, 0.587, 0.114])
            y = np.uint8(y + 1e-3)[..., None]
        else:
            y = np.uint8(PORTS[name](x, params))
        changes.append(np.abs(y.astype(np.float64) - x).mean())
    return float(np.mean(changes))


def _engine_change(name: str, batch: torch.Tensor, severity: int) -> float:
    y = corrupt(batch, name, severity, seed=7, table="cifar")
    return float(((y - batch).abs() * 255).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=list(PORTS), help="corruptions to measure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [(name, False) for name in args.only] + [("saturate", True)] * ("saturate" in args.only)
    print(f"{args.images} photo crops {SIDE}x{SIDE}, 8-bit; mean |change| in levels")
    print(f"{'corruption':<16}{'sev':>4}{'engine':>9}{'generator':>11}{'ratio':>8}")
    worst = 0.0
    for name, gray in rows:
        batch = sample_photos(args.images, SIDE, channels=1 if gray else 3)
        images = np.round(batch.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        for severity in range(1, 6):
            ours = _engine_change(name, batch, severity)
            theirs = _port_change(name, images, severity, gray)
            ratio = ours / theirs if theirs else float("nan")
            worst = max(worst, abs(ratio - 1)) if theirs else worst
            label = f"{name}{' (gray)' if gray else ''}"
            print(f"{label:<16}{severity:>4}{ours:>9.3f}{theirs:>11.3f}{ratio:>8.3f}")
    print(f"largest departure from the generator: {worst:.1%}")


if __name__ == "__main__":
    main()
