"""The corruption engine against a straightforward per-image NumPy implementation, side by side.

For every corruption at severity 3 of the ``cifar`` table: the time to corrupt N CIFAR-sized
images (default 1,000, RGB 32x32, random 8-bit values) with
``uqbench.datamodules.corruptions.corrupt`` in one batch,
and with the same formula written per image in NumPy / scipy.ndimage / PIL (the way the
published generators work: one image at a time). Both run in this process, one after the other,
with torch pinned to ``--threads`` (default 1: NumPy and scipy use one core here too).
The engine's time is the median of ``--repeats`` calls after its first (the first call of a
corruption builds what later calls reuse, such as the shot-noise table and the zoom map, so it
is printed beside), and the per-image loop's is one pass over the images, which already averages
over a thousand images. Target: the engine at least 20x faster over all corruptions together.

    python benchmarks/bench_corruptions.py [--images 1000] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import io
import time

import numpy as np
import scipy.ndimage as ndi
import torch
from PIL import Image
from uqbench.datamodules.corruptions import CORRUPTIONS, TABLES, corrupt
from uqbench.datamodules.corruptions.blur import disk_kernel

P = {name: levels[2] for name, levels in TABLES["cifar"].items()}  # severity 3


def _gauss(img, sigma, mode="nearest", truncate=4.0):
    return ndi.gaussian_filter(img, (sigma, sigma, 0), mode=mode, truncate=truncate)


def _clipped_zoom(img, factor):
    h = img.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    z = ndi.zoom(img[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (z.shape[0] - h) // 2
    return z[trim : trim + h, trim : trim + h]


def _motion(img, radius, sigma, angle):
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for i in range(width):
        dy = -int(np.ceil(i * np.sin(np.deg2rad(angle)) - 0.5))
        dx = -int(np.ceil(i * np.cos(np.deg2rad(angle)) - 0.5))
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        out += k[i] * img[rows][:, cols]
    return out


def _plasma(size, decay, rng):
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        c = m[0::step, 0::step]
        sq = c + np.roll(c, -1, 0)
        sq = sq + np.roll(sq, -1, 1)
        m[half::step, half::step] = sq / 4 + wibble * rng.uniform(-wibble, wibble, sq.shape)
        dr, ul = m[half::step, half::step], m[0::step, 0::step]
        s1 = dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)
        m[0::step, half::step] = s1 / 4 + wibble * rng.uniform(-wibble, wibble, s1.shape)
        s2 = dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)
        m[half::step, 0::step] = s2 / 4 + wibble * rng.uniform(-wibble, wibble, s2.shape)
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def _hsv_edit(img, channel, change):
    """RGB -> HSV, edit one channel, back (scikit-image's formulas, one image in NumPy)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    v = img.max(-1)
    delta = v - img.min(-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6) % 1, 0)
    hsv = [h, s, v]
    hsv[channel] = change(hsv[channel])
    h, s, v = hsv
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros_like(img)
    for k, rgb in enumerate(table):
        out[i == k] = np.stack(rgb, -1)[i == k]
    return out


def _pil_box(img, fraction):
    h = img.shape[0]
    out = []
    for c in range(img.shape[2]):
        f = Image.fromarray(img[..., c].astype(np.float32), mode="F")
        f = f.resize((int(h * fraction),) * 2, Image.BOX).resize((h, h), Image.BOX)
        out.append(np.asarray(f))
    return np.stack(out, -1)


def _jpeg(img, quality):
    buffer = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer)) / 255


def _glass(img, params, rng):
    sigma, d, iterations = params
    y = np.floor(_gauss(img, sigma) * 255)
    h, w = y.shape[:2]
    for _ in range(iterations):
        for r in range(h - d, d, -1):
            for c in range(w - d, d, -1):
                dx, dy = rng.integers(-d, d, size=2)
                r2, c2 = r + dy, c + dx
                y[r, c], y[r2, c2] = y[r2, c2].copy(), y[r, c].copy()
    return _gauss(y / 255, sigma)


def _elastic(img, params, rng):
    side = img.shape[0]
    alpha, sigma, affine = (v * side for v in params)
    c, s = side // 2, side // 3
    src = np.array([[c + s, c + s], [c + s, c - s], [c - s, c - s]], dtype=np.float64)
    dst = src + rng.uniform(-affine, affine, src.shape)
    forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T
    inverse = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])[:2]
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float64)
    sx = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    sy = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    warped = np.stack(
        [ndi.map_coordinates(img[..., k], [sy, sx], order=1, mode="mirror") for k in range(3)], -1
    )
    dx = ndi.gaussian_filter(rng.uniform(-1, 1, (side, side)), sigma, mode="reflect", truncate=3)
    dy = ndi.gaussian_filter(rng.uniform(-1, 1, (side, side)), sigma, mode="reflect", truncate=3)
    return np.stack(
        [
            ndi.map_coordinates(
                warped[..., k], [rows + dy * alpha, cols + dx * alpha], order=1, mode="reflect"
            )
            for k in range(3)
        ],
        -1,
    )


def _snow(img, p, rng):
    mean, std, zoom, threshold, radius, sigma, weight = p
    layer = _clipped_zoom(rng.normal(mean, std, img.shape[:2])[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = (
        np.round(
            _motion(np.clip(layer, 0, 1)[..., None], radius, sigma, rng.uniform(-135, -45)) * 255
        )
        / 255
    )
    gray = img @ np.array([0.299, 0.587, 0.114])
    whitened = weight * img + (1 - weight) * np.maximum(img, gray[..., None] * 1.5 + 0.5)
    return whitened + layer + np.rot90(layer, 2)


def _spatter(img, p, rng):
    mean, std, sigma, threshold, strength, kind = p
    liquid = ndi.gaussian_filter(rng.normal(mean, std, img.shape[:2]), sigma, mode="nearest")
    liquid[liquid < threshold] = 0
    if kind == 0:
        mask = ndi.gaussian_filter((liquid > 0).astype(float), 1.0, mode="nearest")
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=float)
        shade = ndi.uniform_filter(
            np.maximum(ndi.correlate(mask, emboss, mode="mirror"), 0), 3, mode="mirror"
        )
        m = liquid * (1 + shade)
        m = m / max(m.max(), 1e-12) * strength
        return img + np.clip(m[..., None] * np.array([175, 238, 238]) / 255, 0, 1)
    m = ndi.gaussian_filter((liquid > threshold).astype(float), strength, mode="nearest")
    m[m < 0.8] = 0
    return img * (1 - m[..., None]) + m[..., None] * np.array([63, 42, 20]) / 255


def _frost(img, p, rng):
    base = _plasma(img.shape[0], 1.6, rng)
    layer = 0.35 * base + 0.65 * (1 - np.abs(2 * base - 1)) ** 4
    layer = np.clip(layer * 0.45 / layer.mean(), 0, 1)[..., None] * np.array([0.82, 0.91, 1.0])
    return p[0] * img + p[1] * layer


def _fog(img, p, rng):
    peak = img.max()
    return (img + p[0] * _plasma(img.shape[0], p[1], rng)[..., None]) * peak / (peak + p[0])


PER_IMAGE = {
    "gaussian_noise": lambda x, p, r: x + r.normal(0, p, x.shape),
    "shot_noise": lambda x, p, r: r.poisson(x * p) / p,
    "impulse_noise": lambda x, p, r: np.where(
        r.random(x.shape) <= p, (r.random(x.shape) <= 0.5).astype(float), x
    ),
    "defocus_blur": lambda x, p, r: ndi.correlate(
        x, disk_kernel(*p).numpy()[..., None], mode="mirror"
    ),
    "glass_blur": _glass,
    "motion_blur": lambda x, p, r: _motion(x, *p, r.uniform(-45, 45)),
    "zoom_blur": lambda x, p, r: (x + sum(_clipped_zoom(x, z) for z in p)) / (len(p) + 1),
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": lambda x, p, r: _hsv_edit(x, 2, lambda v: np.clip(v + p, 0, 1)),
    "contrast": lambda x, p, r: (x - x.mean((0, 1))) * p + x.mean((0, 1)),
    "elastic_transform": _elastic,
    "pixelate": lambda x, p, r: _pil_box(x, p),
    "jpeg_compression": lambda x, p, r: _jpeg(x, p),
    "speckle_noise": lambda x, p, r: x + x * r.normal(0, p, x.shape),
    "gaussian_blur": lambda x, p, r: _gauss(x, p),
    "spatter": _spatter,
    "saturate": lambda x, p, r: _hsv_edit(x, 1, lambda s: np.clip(s * p[0] + p[1], 0, 1)),
}


def _per_image(name: str, images: np.ndarray, rng: np.random.Generator) -> None:
    for image in images:
        np.clip(PER_IMAGE[name](image, P[name], rng), 0, 1)


def _clock(work, *args) -> float:
    """Seconds for one call, with Python's cyclic garbage collector collected before and off
    during the call, as ``timeit`` does: a collection of the objects the imports left (0.16 s
    here) would otherwise land on whichever side happens to cross its threshold."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        work(*args)
        return time.perf_counter() - start
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # 8-bit images: CIFAR-10 is stored so, and the datamodules of real images hand them so
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), generator=gen).float() / 255
    images = x.permute(0, 2, 3, 1).double().numpy()
    rng = np.random.default_rng(0)
    corrupt(x[:2], "jpeg_compression", 3, 0)  # import torchvision.io outside the clock
    print(f"{args.images} images 3x32x32, severity 3, torch threads {args.threads}")
    print(f"engine: its first call (cold caches) and the median of {args.repeats} more calls")
    header = (
        f"{'corruption':<18} {'first s':>8} {'engine s':>9} {'per-image s':>12} {'speed-up':>9}"
    )
    print(header)
    totals = np.zeros(3)
    for name in CORRUPTIONS:
        first = _clock(corrupt, x, name, 3, 0)  # the shot-noise table, zoom map etc. built here
        engine = float(np.median([_clock(corrupt, x, name, 3, 0) for _ in range(args.repeats)]))
        loop = _clock(_per_image, name, images, rng)
        totals += (first, engine, loop)
        print(f"{name:<18} {first:8.3f} {engine:9.3f} {loop:12.3f} {loop / engine:8.1f}x")
    first, engine, loop = totals
    print(f"{'all 19':<18} {first:8.3f} {engine:9.3f} {loop:12.3f} {loop / engine:8.1f}x")
    print(f"first calls only: {loop / first:.1f}x")


if __name__ == "__main__":
    main()
