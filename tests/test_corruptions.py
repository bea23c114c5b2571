"""The corruption engine against the formulas it implements.

Deterministic parts are held to independent implementations (scipy.ndimage, PIL, colorsys, a
per-image NumPy port of the generator's loops) on the same inputs; random parts are replayed:
``Replay`` records the engine's draws and the reference consumes the same numbers.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.special
import scipy.stats
import torch
from PIL import Image
from uqbench.datamodules.corruptions import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRA,
    TABLES,
    blur,
    corrupt,
    digital,
    noise,
    ops,
    poisson,
    shift_each,
    weather,
)
from uqbench.datamodules.corruptions.sheet import contact_sheet, sample_photos, write_contact_sheet


class Replay(ops.Rand):
    """A Rand that remembers every draw, in order."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(torch.Generator().manual_seed(seed))
        self.draws: list[np.ndarray] = []

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        self.draws.append(t.double().numpy().copy())
        return t

    def normal(self, shape, mean=0.0, std=1.0):
        return self._keep(super().normal(shape, mean, std))

    def uniform(self, shape, low, high):
        return self._keep(super().uniform(shape, low, high))

    def integers(self, low, high, shape, dtype=torch.long):
        return self._keep(super().integers(low, high, shape, dtype))

    def poisson(self, rate):
        return self._keep(super().poisson(rate))

    def unit_doubles(self, n):
        return self._keep(super().unit_doubles(n))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return sample_photos(4, 32)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


# -- building blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize("sigma,truncate", [(0.4, 4.0), (1.5, 4.0), (2.0, 3.0)])
def test_gaussian_filter_is_scipys(mode, sigma, truncate):
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    ours = ops.gaussian_filter(x, sigma, mode, truncate)
    ref = ndi.gaussian_filter(_np(x), (0, 0, sigma, sigma), mode=mode, truncate=truncate)
    np.testing.assert_allclose(_np(ours), ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 5), (17, 17)])
def test_correlate2d_is_scipys(shape):
    x = torch.rand(2, 1, 20, 21, dtype=torch.float64)
    k = torch.rand(shape, dtype=torch.float64)
    ref = ndi.correlate(_np(x)[:, 0], _np(k)[None], mode="mirror")
    np.testing.assert_allclose(_np(ops.correlate2d(x, k, "mirror"))[:, 0], ref, atol=1e-12)


def test_border_modes_on_a_short_axis():
    # Padding wider than the axis wraps the reflection again, as scipy does.
    x = torch.arange(3.0, dtype=torch.float64)
    for mode in ("nearest", "reflect", "mirror"):
        ours = x[ops._pad_index(3, 5, 5, mode, x.device)]
        ref = np.pad(
            np.arange(3.0),
            5,
            mode={"nearest": "edge", "reflect": "symmetric", "mirror": "reflect"}[mode],
        )
        np.testing.assert_array_equal(ours.numpy(), ref)


def test_disk_kernel_is_the_generators():
    for radius, alias in [(0.3, 0.4), (1.5, 0.1), (3, 0.1)]:
        t = np.arange(-8, 9)
        disk = ((t[None] ** 2 + t[:, None] ** 2) <= radius**2).astype(float)
        disk /= disk.sum()
        g = np.exp(-((np.arange(3) - 1.0) ** 2) / (2 * alias**2))
        g /= g.sum()
        ref = ndi.correlate1d(ndi.correlate1d(disk, g, 0, mode="mirror"), g, 1, mode="mirror")
        np.testing.assert_allclose(blur.disk_kernel(radius, alias).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize(
    "size_in,size_out",
    [(32, 30), (32, 27), (27, 32), (28, 20), (28, 24), (24, 28), (64, 57), (38, 64)],
)
def test_box_resize_is_pils(size_in, size_out):
    x = torch.rand(1, 1, size_in, size_in, dtype=torch.float64)
    image = Image.fromarray(x[0, 0].numpy().astype(np.float32), mode="F")
    ref = np.asarray(image.resize((size_out, size_out), Image.BOX), dtype=np.float64)
    np.testing.assert_allclose(_np(ops.resize_box(x, (size_out, size_out)))[0, 0], ref, atol=1e-6)


@pytest.mark.parametrize("factor", [1.0, 1.06, 1.13, 1.25, 2.25])
def test_clipped_zoom_is_scipys_zoom(factor):
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    h = 32
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = ndi.zoom(_np(x)[0, 0, top : top + crop, top : top + crop], factor, order=1)
    trim = (zoomed.shape[0] - h) // 2
    ref = zoomed[trim : trim + h, trim : trim + h]
    np.testing.assert_allclose(_np(ops.clipped_zoom(x, factor))[0, 0], ref, atol=1e-9)
    z = ops.zoom_matrix(h, factor)  # the same zoom as a matrix on both sides (zoom_blur's form)
    np.testing.assert_allclose(_np(z @ x[0, 0] @ z.T), ref, atol=1e-9)


def test_motion_shift_sum_is_the_generators_shift_loop():
    """The reference's shift(): np.roll, then the wrapped rows/columns set to the edge."""

    def shift(image, dx, dy):
        out = image
        if dx < 0:
            out = np.roll(out, image.shape[1] + dx, axis=1)
            out[:, dx:] = out[:, dx - 1 : dx]
        elif dx > 0:
            out = np.roll(out, dx, axis=1)
            out[:, :dx] = out[:, dx : dx + 1]
        if dy < 0:
            out = np.roll(out, image.shape[0] + dy, axis=0)
            out[dy:, :] = out[dy - 1 : dy, :]
        elif dy > 0:
            out = np.roll(out, dy, axis=0)
            out[:dy, :] = out[dy : dy + 1, :]
        return out

    def reference(image, radius, sigma, angle):
        width = 2 * radius + 1
        k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
        k /= k.sum()
        out = np.zeros_like(image)
        for i in range(width):
            dy = -int(np.ceil(i * np.sin(np.deg2rad(angle)) - 0.5))
            dx = -int(np.ceil(i * np.cos(np.deg2rad(angle)) - 0.5))
            if abs(dy) >= image.shape[0] or abs(dx) >= image.shape[1]:
                break
            out = out + k[i] * shift(image.copy(), dx, dy)
        return out

    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    angles = torch.tensor([-44.0, 10.0, -120.0])
    for radius in (3, 7):  # radius 7: width 15 > 12 stops early, as the reference does
        weights, dy, dx = ops.motion_shifts(radius, 2.0, angles)
        ours = ops.shift_sum(x, weights, dy, dx)
        for b, angle in enumerate(angles.tolist()):
            ref = reference(_np(x)[b, 0], radius, 2.0, angle)
            np.testing.assert_allclose(_np(ours)[b, 0], ref, atol=1e-12)


def test_plasma_fractal_is_diamond_square_on_the_same_draws():
    rand = Replay(3)
    ours = ops.plasma_fractal(2, 8, 2.0, rand).double().numpy()
    draws = iter(rand.draws)
    for b in range(2):
        m = np.zeros((8, 8))
        step, wibble = 8, 100.0
        draws_b = [d[b] for d in rand.draws]
        it = iter(draws_b)
        while step >= 2:
            half = step // 2
            c = m[0::step, 0::step]
            sq = c + np.roll(c, -1, 0)
            sq = sq + np.roll(sq, -1, 1)
            m[half::step, half::step] = sq / 4 + wibble * next(it)
            dr, ul = m[half::step, half::step], m[0::step, 0::step]
            m[0::step, half::step] = (dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)) / 4 + (
                wibble * next(it)
            )
            m[half::step, 0::step] = (dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)) / 4 + (
                wibble * next(it)
            )
            step //= 2
            wibble /= 2.0
        m -= m.min()
        np.testing.assert_allclose(ours[b], m / m.max(), atol=1e-6)
    del draws
    assert ours.min() == 0 and ours.max() == 1


def test_poisson_table_is_the_inverse_of_scipys_cdf(monkeypatch):
    monkeypatch.setattr(poisson, "CHUNK", 1000)  # several chunks, late elements in each
    rates = torch.tensor([0.0, 1e-3, 0.4, 3.7, 25.0, 100.0, 500.0], dtype=torch.float64)
    table = poisson.PoissonTable(rates)
    # F as scipy computes it, up to where every row is 1 in float64
    columns = np.arange(table.width)
    np.testing.assert_array_equal(table.cdf, scipy.special.pdtr(columns, rates[:, None].numpy()))
    # the guide: the smallest k with F(k) > j / G, by binary search
    steps = (torch.arange(poisson.GUIDE, dtype=torch.float64) / poisson.GUIDE).repeat(7, 1)
    guide = torch.searchsorted(table.cdf, steps, right=True)
    np.testing.assert_array_equal(table.guide.view(7, -1).numpy(), guide.numpy())
    gen = torch.Generator().manual_seed(3)
    levels = torch.randint(len(rates), (5, 1234), generator=gen, dtype=torch.int32)
    u = torch.rand(levels.numel(), generator=gen, dtype=torch.float64)
    u[:14] = torch.tensor([0.0, 1 - 2**-53], dtype=torch.float64).repeat(7)  # both ends of [0, 1)
    levels.view(-1)[:14] = torch.arange(7, dtype=torch.int32).repeat_interleave(2)
    given = iter(u.split(1000))
    draws = table.sample(levels, lambda n: next(given))
    assert draws.dtype == torch.int32 and draws.shape == levels.shape
    # scipy's ppf: the smallest k with F(k) >= u (ours: > u; equal but for ties, measure 0)
    expected = scipy.stats.poisson.ppf(u.numpy(), rates[levels.view(-1).long()].numpy())
    expected[u.numpy() == 0] = 0  # ppf(0) is -1 by scipy's convention; no k has F(k) <= 0
    for i in range(1, 14, 2):  # the top uniform ties with F rounded: the first F(k) > u
        k = np.arange(2000)
        expected[i] = k[scipy.special.pdtr(k, float(rates[i // 2])) > u[i].item()][0]
    np.testing.assert_array_equal(draws.view(-1).numpy(), expected)
    assert int(draws.view(-1)[13]) > 600  # the top uniform reaches far into 500's tail


def test_lattice_levels_accepts_only_8_bit_values():
    x = torch.arange(256).float().reshape(1, 1, 16, 16) / 255
    np.testing.assert_array_equal(poisson.lattice_levels(x).view(-1).numpy(), np.arange(256))
    assert poisson.lattice_levels(x + 1e-4) is None
    assert poisson.lattice_levels(x * 2) is None  # on the lattice's spacing, past 1
    y = x.clone()
    y.view(-1)[-1] = 0.5  # one value off the lattice is enough
    assert poisson.lattice_levels(y) is None


# -- corruptions against their formulas --------------------------------------------------------


def test_noise_formulas_on_replayed_draws(photos):
    x = photos.double()
    rand = Replay()
    np.testing.assert_allclose(
        _np(noise.gaussian_noise(x, 0.08, rand)), np.clip(_np(x) + rand.draws[-1], 0, 1), atol=1e-7
    )
    rand = Replay()
    y = noise.speckle_noise(x, 0.2, rand)
    np.testing.assert_allclose(_np(y), np.clip(_np(x) * (1 + rand.draws[-1]), 0, 1), atol=1e-7)
    off = x * 0.999  # values off the 8-bit lattice: torch.poisson
    rand = Replay()
    y = noise.shot_noise(off, 75, rand)
    np.testing.assert_allclose(_np(y), np.clip(rand.draws[-1] / 75, 0, 1), atol=1e-7)
    rand = Replay()  # 8-bit images (the photos are): inversion by table
    y = noise.shot_noise(x, 75, rand)
    u = np.concatenate(rand.draws).reshape(x.shape)
    counts = scipy.stats.poisson.ppf(u, _np(x) * 75)
    np.testing.assert_allclose(_np(y), np.clip(counts / 75, 0, 1), atol=1e-7)
    rand = Replay()
    y = _np(noise.impulse_noise(x, 0.05, rand))
    hit, salt = rand.draws[0] <= 0.05, rand.draws[1] <= 0.5
    np.testing.assert_array_equal(y, np.where(hit, np.where(salt, 1.0, 0.0), _np(x)))


def test_noise_strengths_are_the_published_ones():
    gray = torch.full((64, 3, 32, 32), 128 / 255)  # an 8-bit level
    residual = corrupt(gray, "gaussian_noise", 3, seed=0) - gray  # std 0.08
    assert abs(float(residual.std()) - 0.08) < 0.004
    shot = corrupt(gray, "shot_noise", 5, seed=0)  # Poisson(25) / 50: variance ~0.5 / 50
    assert abs(float(shot.var()) - 0.01) < 0.001
    hit = (corrupt(gray, "impulse_noise", 5, seed=0) != gray).float().mean()  # 7%
    assert abs(float(hit) - 0.07) < 0.005


def test_deterministic_corruptions_are_the_references(photos):
    x = photos.double()
    np.testing.assert_allclose(
        _np(blur.gaussian_blur(x, 0.7, None)),
        np.clip(ndi.gaussian_filter(_np(x), (0, 0, 0.7, 0.7), mode="nearest"), 0, 1),
        atol=1e-12,
    )
    kernel = blur.disk_kernel(1.5, 0.1).numpy()
    np.testing.assert_allclose(
        _np(blur.defocus_blur(x, (1.5, 0.1), None)),
        np.clip(ndi.correlate(_np(x), kernel[None, None], mode="mirror"), 0, 1),
        atol=1e-12,
    )
    mean = _np(x).mean((2, 3), keepdims=True)
    np.testing.assert_allclose(
        _np(digital.contrast(x, 0.3, None)), np.clip((_np(x) - mean) * 0.3 + mean, 0, 1), atol=1e-12
    )
    zooms = TABLES["cifar"]["zoom_blur"][2]
    ref = (_np(x) + sum(_np(ops.clipped_zoom(x, z)) for z in zooms)) / (len(zooms) + 1)
    np.testing.assert_allclose(_np(blur.zoom_blur(x, zooms, None)), np.clip(ref, 0, 1), atol=1e-12)


def _hsv_reference(x: np.ndarray, channel: int, change) -> np.ndarray:
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                hsv = list(colorsys.rgb_to_hsv(*x[b, :, i, j]))
                hsv[channel] = change(hsv[channel])
                out[b, :, i, j] = colorsys.hsv_to_rgb(*hsv)
    return np.clip(out, 0, 1)


def test_brightness_and_saturate_are_hsv_edits(photos):
    x = photos[:2].double()
    ref = _hsv_reference(_np(x), 2, lambda v: min(max(v + 0.2, 0), 1))
    np.testing.assert_allclose(_np(digital.brightness(x, 0.2, None)), ref, atol=1e-9)
    ref = _hsv_reference(_np(x), 1, lambda s: min(max(s * 2 + 0.1, 0), 1))
    np.testing.assert_allclose(_np(digital.saturate(x, (2, 0.1), None)), ref, atol=1e-9)
    levels = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=torch.float64)
    grid = torch.cartesian_prod(levels, levels, levels).T.reshape(1, 3, 1, -1)  # ties, grays, black
    for shift in (0.1, 0.6):
        ref = _hsv_reference(_np(grid), 2, lambda v, s=shift: min(max(v + s, 0), 1))
        np.testing.assert_allclose(_np(digital.brightness(grid, shift, None)), ref, atol=1e-12)
    for params in ((0.1, 0.0), (2.5, 0.2)):
        ref = _hsv_reference(_np(grid), 1, lambda s, p=params: min(max(s * p[0] + p[1], 0), 1))
        np.testing.assert_allclose(_np(digital.saturate(grid, params, None)), ref, atol=1e-12)
    gray = photos[:2, :1].double()
    np.testing.assert_allclose(
        _np(digital.brightness(gray, 0.2, None)), np.clip(_np(gray) + 0.2, 0, 1)
    )
    # Gray images: the generator's round trip on three equal channels (a red tint where the
    # shift is positive), seen through the luma weights; no shift, no change.
    tinted = _hsv_reference(np.repeat(_np(gray), 3, 1), 1, lambda s: min(max(s * 2.5 + 0.2, 0), 1))
    luma = (tinted * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdims=True)
    np.testing.assert_allclose(_np(digital.saturate(gray, (2.5, 0.2), None)), luma, atol=1e-12)
    np.testing.assert_allclose(_np(digital.saturate(gray, (1.5, 0.0), None)), _np(gray), atol=1e-12)


def test_pixelate_and_jpeg_are_pils(photos):
    px = (photos * 255).round().byte()
    for b in range(len(photos)):
        image = Image.fromarray(px[b].permute(1, 2, 0).numpy())
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=58)
        ref = np.asarray(Image.open(buffer))
        ours = digital.jpeg_compression(photos[b : b + 1], 58, None)[0].permute(1, 2, 0)
        np.testing.assert_array_equal(torch.round(ours * 255).byte().numpy(), ref)  # bit for bit
        # Off the 8-bit lattice (no 8-bit original): PIL's float resize, mode F.
        off = photos[b : b + 1].double() * 0.9 + 0.0371
        channels = []
        for c in range(3):
            f = Image.fromarray(off[0, c].numpy().astype(np.float32), mode="F")
            f = f.resize((27, 27), Image.BOX).resize((32, 32), Image.BOX)
            channels.append(np.asarray(f, dtype=np.float64))
        ours = digital.pixelate(off, 0.85, None)[0]
        np.testing.assert_allclose(_np(ours), np.clip(np.stack(channels), 0, 1), atol=1e-6)


@pytest.mark.parametrize("side,table", [(32, "cifar"), (64, "tinyimagenet"), (28, "cifar")])
def test_pixelate_on_8_bit_images_is_pils_bit_for_bit(side, table):
    """The generator pixelates 8-bit PIL images: PIL rounds each pass to 8 bits in fixed point.
    On images of the 8-bit lattice the engine's output equals PIL's at every severity."""
    gen = torch.Generator().manual_seed(side)
    px = torch.randint(0, 256, (6, 3, side, side), generator=gen, dtype=torch.uint8)
    px[:2] = px[:2, :, :1, :1]  # flat images too: ties everywhere
    for severity, fraction in enumerate(TABLES[table]["pixelate"], start=1):
        ours = corrupt(px.float() / 255, "pixelate", severity, 0, table)
        for b in range(len(px)):
            image = Image.fromarray(px[b].permute(1, 2, 0).numpy())
            small = (int(side * fraction), int(side * fraction))
            ref = np.asarray(image.resize(small, Image.BOX).resize((side, side), Image.BOX))
            got = torch.round(ours[b] * 255).byte().permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("sigma,d,iterations", [(0.4, 1, 2), (0.7, 2, 1)])
def test_glass_blur_is_the_generators_swap_loop(photos, sigma, d, iterations):
    """The generator's loop, replayed on the same offsets with its own line on a NumPy uint8
    image [H, W, C]: ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, which copies the neighbour
    into (h, w) through views and leaves the neighbour unchanged."""
    x = photos[:2].double()
    rand = Replay()
    ours = _np(blur.glass_blur(x, (sigma, d, iterations), rand))
    shifts = rand.draws[0]  # [iterations, positions, 2, B]
    for b in range(2):
        blurred = ndi.gaussian_filter(_np(x)[b], (0, sigma, sigma), mode="nearest")
        img = np.uint8(blurred * 255).transpose(1, 2, 0).copy()  # [H, W, C], as the generator
        for it in range(iterations):
            k = 0
            for h in range(32 - d, d, -1):
                for w in range(32 - d, d, -1):
                    dx, dy = int(shifts[it, k, 0, b]), int(shifts[it, k, 1, b])
                    h_prime, w_prime = h + dy, w + dx
                    img[h, w], img[h_prime, w_prime] = img[h_prime, w_prime], img[h, w]
                    k += 1
        chw = img.transpose(2, 0, 1) / 255
        ref = np.clip(ndi.gaussian_filter(chw, (0, sigma, sigma), mode="nearest"), 0, 1)
        np.testing.assert_allclose(ours[b], ref, atol=1e-9)
    assert shifts.min() == -d and shifts.max() == d - 1  # numpy randint's [-d, d)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_spatter_is_the_generators_steps_on_the_same_draws(photos, severity):
    """The generator's spatter, ported step by step (OpenCV's Canny, distance transform,
    threshold, blurs, equalization and filter2D for water; the smoothed mask for mud) and
    run image by image on the engine's own normal draws."""
    import cv2

    x = (photos * 255).round() / 255  # 8-bit images, as the generator reads them
    rand = Replay()
    params = TABLES["cifar"]["spatter"][severity - 1]
    ours = _np(weather.spatter(x, params, rand))
    mean, std, sigma, threshold, strength, kind = params
    (draws,) = rand.draws  # [B, 1, H, W] standard normals scaled to (mean, std)
    for b in range(len(x)):
        image = _np(x)[b].transpose(1, 2, 0).astype(np.float32)
        liquid = ndi.gaussian_filter(draws[b, 0], sigma, mode="nearest", truncate=4.0)
        liquid[liquid < threshold] = 0
        if kind == 0:
            layer = (liquid * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(layer, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = layer * dist
            m = m / np.max(m) * strength
            colour = np.array([175, 238, 238], np.float32) / 255
            ref = np.clip(image + m[..., None] * colour, 0, 1)
        else:
            drops = np.where(liquid > threshold, 1.0, 0.0)
            m = ndi.gaussian_filter(drops, strength, mode="nearest", truncate=4.0)
            m[m < 0.8] = 0
            colour = np.array([63, 42, 20], np.float32) / 255
            ref = np.clip(image * (1 - m[..., None]) + colour * m[..., None], 0, 1)
        np.testing.assert_allclose(ours[b], ref.transpose(2, 0, 1), atol=1e-5)


def test_elastic_is_affine_then_displacement_with_scipys_sampling(photos):
    x = photos[:2].double()
    rand = Replay()
    alpha, sigma, affine = 0.1, 0.04, 0.05
    ours = _np(digital.elastic_transform(x, (alpha, sigma, affine), rand))
    offsets, ux, uy = rand.draws
    side = 32
    c, s = side // 2, side // 3
    src = np.array([[c + s, c + s], [c + s, c - s], [c - s, c - s]], dtype=np.float64)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float64)
    for b in range(2):
        dst = src + offsets[b]
        forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # (x, y) = A [x; y; 1]
        inverse = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])[:2]
        sx = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        sy = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        warped = np.stack(
            [ndi.map_coordinates(ch, [sy, sx], order=1, mode="mirror") for ch in _np(x)[b]]
        )
        dx = ndi.gaussian_filter(ux[b, 0], sigma * side, mode="reflect", truncate=3) * alpha * side
        dy = ndi.gaussian_filter(uy[b, 0], sigma * side, mode="reflect", truncate=3) * alpha * side
        ref = np.stack(
            [
                ndi.map_coordinates(ch, [rows + dy, cols + dx], order=1, mode="reflect")
                for ch in warped
            ]
        )
        np.testing.assert_allclose(ours[b], np.clip(ref, 0, 1), atol=1e-5)


def test_fog_frost_snow_spatter_formulas(photos):
    x = photos.double()
    rand = Replay()
    y = _np(weather.fog(x, (0.75, 2.5), rand))
    maps = _np(ops.plasma_fractal(4, 32, 2.5, Replay()))[:, None]  # same seed: same map
    peak = _np(x).max((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        y, np.clip((_np(x) + 0.75 * maps) * peak / (peak + 0.75), 0, 1), atol=1e-6
    )
    layer = _np(weather.frost_texture(4, 32, 32, Replay()))
    assert layer.min() >= 0 and layer.max() <= 1
    np.testing.assert_allclose(
        _np(weather.frost(x, (0.85, 0.4), Replay())),
        np.clip(0.85 * _np(x) + 0.4 * layer, 0, 1),
        atol=1e-6,
    )
    # Snow only brightens (flakes >= 0 and the whitening is a max), mud only darkens here.
    assert (_np(weather.snow(x, TABLES["cifar"]["snow"][4], Replay())) >= _np(x) - 1e-9).all()


# -- the engine's contract ---------------------------------------------------------------------


def test_every_table_has_five_severities_of_known_corruptions():
    assert len(BENCHMARK) == 15 and len(EXTRA) == 4
    for name, table in TABLES.items():
        assert set(table) <= set(CORRUPTIONS), name
        assert all(len(levels) == 5 for levels in table.values()), name
    assert set(TABLES["cifar"]) == set(TABLES["tinyimagenet"]) == set(CORRUPTIONS)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 28, 28), (2, 3, 64, 64)])
def test_every_corruption_keeps_shape_range_and_seed(name, shape):
    x = torch.rand(shape)
    a = corrupt(x, name, 5, seed=7)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a * 255, torch.round(a * 255))  # 8-bit levels
    assert torch.equal(a, corrupt(x, name, 5, seed=7))
    if name not in (
        "contrast",
        "brightness",
        "saturate",
        "pixelate",
        "jpeg_compression",
        "gaussian_blur",
        "defocus_blur",
        "zoom_blur",
    ):  # the deterministic ones
        assert not torch.equal(a, corrupt(x, name, 5, seed=8))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_on_8_bit_and_empty_batches(name):
    x = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1)) / 255
    a = corrupt(x, name, 3, seed=7)
    assert a.shape == x.shape and torch.equal(a, corrupt(x, name, 3, seed=7))
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    empty = corrupt(x[:0], name, 3, seed=7)
    assert empty.shape == (0, 3, 32, 32) and empty.dtype == torch.float32


def test_bad_requests_are_named():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption 'smoke'"):
        corrupt(x, "smoke", 1, 0)
    with pytest.raises(ValueError, match="severity must be 1-5"):
        corrupt(x, "fog", 6, 0)
    with pytest.raises(ValueError, match="unknown corruption 'snow' for the digits table"):
        corrupt(x, "snow", 1, 0, table="digits")
    with pytest.raises(ValueError, match=r"expected images \[B, 1 or 3, H, W\]"):
        corrupt(torch.rand(2, 2, 32, 32), "fog", 1, 0)


def test_shift_each_uses_one_corruption_per_image():
    x = torch.rand(40, 3, 32, 32)
    y = shift_each(x, ("contrast", "brightness"), seed=3)
    assert torch.equal(y, shift_each(x, ("contrast", "brightness"), seed=3))
    assert (y != x).flatten(1).any(1).all()


def test_contact_sheet_has_a_row_per_corruption(tmp_path):
    images = sample_photos(2, 32)
    sheet = contact_sheet(images, zoom=1)
    assert sheet.shape == (3, 19 * 34, 2 * 6 * 34)
    path = write_contact_sheet(tmp_path / "sheet.png", images)
    width, height = Image.open(path).size
    margin = width - 2 * 6 * 34 * 4  # the rows' labels
    assert height == 19 * 34 * 4 + 16 and 8 * len("frost (procedural)") <= margin < 300
    # A header labels the columns (clean, s1-s5 per photo): ink above every column.
    header = np.asarray(Image.open(path).convert("L"))[:16, margin:]
    column = (2 * 6 * 34 * 4) // 12
    assert all((header[:, k * column : (k + 1) * column] < 128).any() for k in range(12))
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
    from uqbench.datamodules.corruptions.sheet import row_names

    assert "frost (procedural)" in row_names("cifar")  # the sheet says which frost it shows
    assert "frost (generator's photos)" in row_names("cifar", frost_photos=object())


def test_cli_writes_a_sheet_and_refuses_bad_keys(tmp_path, capsys):
    from uqbench.cli import main

    out = tmp_path / "sheet.png"
    assert main(["corruptions", f"out={out}", "size=28", "images=1"]) == 0
    assert "frost: procedural (fallback)" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert height == 19 * 30 * 4 + 16 and width > 6 * 30 * 4  # MNIST-sized: gray, CIFAR table
    for bad in (["colour=1"], ["size=x"], ["table=imagenet"], [f"out={tmp_path}/no/such.png"]):
        assert main(["corruptions", *bad]) == 2
        assert "uqbench corruptions:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def _frost_folder(root, side=420):
    """Six stand-in photographs in the generator's names and formats (the real ones are
    fetched with data.download=true; none may be downloaded in the tests)."""
    import cv2
    from uqbench.datamodules.corruptions import frost_photos

    folder = root / frost_photos.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, name in enumerate(frost_photos.FILES):
        image = rng.integers(0, 256, (side + 10 * k, side + 20 * k, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name), image)
    return root


@pytest.mark.parametrize("side", [32, 64])
def test_frost_with_the_generators_photographs_is_its_crop_and_blend(tmp_path, photos, side):
    import cv2
    from uqbench.datamodules.corruptions import frost_photos

    root = _frost_folder(tmp_path)
    found = frost_photos.find(root)
    x = torch.nn.functional.interpolate(photos.double(), size=(side, side))
    rand = Replay()
    ours = _np(weather.frost(x, (0.85, 0.4), rand, photos=found))
    picks, *offsets = rand.draws
    for b in range(len(x)):
        image = cv2.imread(str(root / "frost" / frost_photos.FILES[int(picks[b])]))
        factor = 0.2 if side <= 32 else 0.3
        image = cv2.resize(image, (0, 0), fx=factor, fy=factor)
        top, left = int(offsets[2 * b][0]), int(offsets[2 * b + 1][0])
        assert 0 <= top < image.shape[0] - side and 0 <= left < image.shape[1] - side
        crop = image[top : top + side, left : left + side][..., [2, 1, 0]]
        ref = np.clip(0.85 * _np(x)[b] + 0.4 * crop.transpose(2, 0, 1) / 255, 0, 1)
        np.testing.assert_allclose(ours[b], ref, atol=1e-6)
    assert set(picks.ravel().tolist()) <= {0, 1, 2, 3, 4}  # frost6.jpg is never drawn


def test_a_run_records_which_frost_it_used(tmp_path):
    from uqbench.datamodules.corruptions import frost_photos

    from uqbench.errors import UQBenchError

    record = frost_photos.provenance(tmp_path)
    assert list(record) == ["frost"] and record["frost"].startswith("procedural texture")
    _frost_folder(tmp_path)
    record = frost_photos.provenance(tmp_path)
    assert sorted(record) == sorted(f"frost/{name}" for name in frost_photos.FILES)
    (tmp_path / "frost" / "frost3.png").write_bytes(b"not a png")
    with pytest.raises(UQBenchError, match="frost3.png is not a readable frost photograph"):
        frost_photos.find(tmp_path)
