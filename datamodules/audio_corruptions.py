"""SpeechCmd-C: label-preserving audio corruptions on batches of waveforms (paper A.3, D).

``corrupt_audio(wave, name, severity, seed, noise_bank)`` maps clips [B, N] (16 kHz, values
in [-1, 1]) to clips of the same shape. Each corruption draws its parameter per clip, uniformly
from the range its severity names in :data:`SEVERITIES` (severity 1 mild .. 5 strong), from a
generator seeded by (seed, name, severity): the same clips give the same corrupted clips.

- ``reverb``: a synthetic room impulse response: the direct path, then after a pre-delay of
  0-20 ms a Gaussian tail whose envelope falls by 60 dB over RT60 (exp(-6.91 t / RT60)), tail
  energy equal to the direct path's; convolved, cut to the clip, RMS restored.
- ``noise``: a random 1 s segment of the background-noise bank mixed in at an SNR (dB).
- ``bandlimit``: a 4th-order Butterworth low-pass, high-pass or band-pass (one of the three per
  clip, cutoffs drawn per severity), applied zero-phase in the frequency domain as |H(f)|^2 (the
  magnitude ``scipy.signal.sosfiltfilt`` applies), the clip zero-padded against wrap-around.
- ``stretch``: phase-vocoder time stretch by a factor in [0.9, 1.1] (512-point STFT, hop 128),
  cut or zero-padded back to the clip length (tempo changes, pitch does not).
- ``pitch``: pitch shift by up to 2 semitones: a time stretch by 2^(-n/12) then linear
  resampling back to the clip length (pitch changes, duration does not).
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor
from uqbench.datamodules.logmel import SAMPLE_RATE, snr_mix

# Per corruption, per severity 1..5: the (low, high) range its parameter is drawn from.
SEVERITIES: dict[str, tuple[tuple[float, float], ...]] = {
    "reverb": ((0.2, 0.36), (0.36, 0.52), (0.52, 0.68), (0.68, 0.84), (0.84, 1.0)),  # RT60 s
    "noise": ((16, 20), (12, 16), (8, 12), (4, 8), (0, 4)),  # SNR dB
    "bandlimit": ((6000, 7000), (4500, 6000), (3500, 4500), (2500, 3500), (1500, 2500)),  # LP Hz
    "stretch": ((0.0, 0.02), (0.02, 0.04), (0.04, 0.06), (0.06, 0.08), (0.08, 0.10)),  # |1-r|
    "pitch": ((0.0, 0.4), (0.4, 0.8), (0.8, 1.2), (1.2, 1.6), (1.6, 2.0)),  # |semitones|
}
# The high-pass cutoffs that go with each severity's low-pass range (band-pass uses both).
HIGH_PASS = ((50, 100), (100, 200), (200, 350), (350, 500), (500, 800))
ORDER = 4
PRE_DELAY = (0.0, 0.020)  # seconds
STFT_FFT, STFT_HOP = 512, 128


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low


def _signs(gen: torch.Generator, n: int) -> Tensor:
    return torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()


def _rms(x: Tensor) -> Tensor:
    return x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-10)


def room_impulse(rt60: Tensor, delay: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """[B, length] impulse responses: 1 at t = 0 (the direct path), then from ``delay`` (s, and
    never at t = 0) a Gaussian tail with envelope exp(-6.91 t / rt60) (-60 dB at t = rt60),
    scaled to unit energy."""
    t = torch.arange(length, dtype=torch.float64) / SAMPLE_RATE
    envelope = torch.exp(-math.log(1000.0) * t[None, :] / rt60[:, None])
    tail = torch.randn(len(rt60), length, generator=gen, dtype=torch.float64) * envelope
    tail = torch.where((t[None, :] >= delay[:, None]) & (t[None, :] > 0), tail, 0.0)
    tail = tail / tail.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    tail[:, 0] += 1.0
    return tail


def convolve(x: Tensor, h: Tensor) -> Tensor:
    """Linear convolution of each clip with its own response, cut to the clip's length."""
    n = x.shape[-1] + h.shape[-1] - 1
    size = 1 << (n - 1).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)
    return y[..., : x.shape[-1]]


def butterworth_power(freqs: Tensor, low: Tensor | None, high: Tensor | None) -> Tensor:
    """|H(f)|^2 of a Butterworth low-pass at ``low`` Hz and/or high-pass at ``high`` Hz
    (order :data:`ORDER`), per clip: [B, F]. The analog magnitude; the digital filter's
    differs near Nyquist (bilinear warping), which the tests bound."""
    power = torch.ones(len(low if low is not None else high), len(freqs), dtype=torch.float64)
    if low is not None:
        power = power / (1 + (freqs[None, :] / low[:, None]) ** (2 * ORDER))
    if high is not None:
        ratio = high[:, None] / freqs[None, :].clamp_min(1e-9)
        power = power / (1 + ratio ** (2 * ORDER))
    return power


def band_limit(x: Tensor, low: Tensor | None, high: Tensor | None) -> Tensor:
    """Zero-phase filtering by :func:`butterworth_power` in the frequency domain."""
    size = 2 * x.shape[-1]
    spectrum = torch.fft.rfft(x, size)
    freqs = torch.fft.rfftfreq(size, 1 / SAMPLE_RATE).double()
    gain = butterworth_power(freqs, low, high).to(x.device, spectrum.real.dtype)
    return torch.fft.irfft(spectrum * gain, size)[..., : x.shape[-1]]


def time_stretch(x: Tensor, rate: Tensor, length: int | None = None) -> Tensor:
    """Phase-vocoder time stretch of each clip by its ``rate`` (> 1: faster, shorter), cut or
    zero-padded to ``length`` samples (default: the input's). Batched: every clip's frame
    positions are gathered at once."""
    b, n = x.shape
    window = torch.hann_window(STFT_FFT, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, STFT_FFT, STFT_HOP, window=window, return_complex=True)  # [B, F, T]
    frames = spec.shape[-1]
    out_frames = int(math.ceil(frames / float(rate.min())))
    steps = torch.arange(out_frames, dtype=torch.float64)[None, :] * rate.double()[:, None].cpu()
    steps = steps.clamp(max=frames - 1).to(x.device)
    i0 = steps.floor().long()
    i1 = (i0 + 1).clamp(max=frames - 1)
    alpha = (steps - i0).to(x.dtype)[:, None, :]
    gather = lambda i: spec.gather(2, i[:, None, :].expand(b, spec.shape[1], -1))  # noqa: E731
    s0, s1 = gather(i0), gather(i1)
    magnitude = (1 - alpha) * s0.abs() + alpha * s1.abs()
    expected = torch.linspace(0, math.pi * STFT_HOP, spec.shape[1], device=x.device, dtype=x.dtype)
    advance = s1.angle() - s0.angle() - expected[None, :, None]
    advance = advance - 2 * math.pi * torch.round(advance / (2 * math.pi))
    phase = torch.cumsum(advance + expected[None, :, None], -1)
    phase = torch.cat([spec[:, :, :1].angle(), (spec[:, :, :1].angle() + phase)[:, :, :-1]], -1)
    # Frames past each clip's own end repeat its last frame: silence them.
    valid = torch.arange(out_frames, device=x.device)[None, :] * rate[:, None].to(x.device)
    valid = (valid <= frames - 1).to(x.dtype)[:, None, :]
    stretched = torch.polar(magnitude * valid, phase)
    y = torch.istft(stretched, STFT_FFT, STFT_HOP, window=window)
    length = n if length is None else length
    return F.pad(y, (0, max(0, length - y.shape[-1])))[..., :length]


def pitch_shift(x: Tensor, semitones: Tensor) -> Tensor:
    """Shift each clip by its ``semitones``: stretch by 2^(-n/12), resample back to length."""
    ratio = 2.0 ** (semitones.double() / 12.0)  # frequency ratio
    n = x.shape[-1]
    longest = int(math.ceil(n * float(ratio.max())))
    stretched = time_stretch(x, 1.0 / ratio, longest)  # n * ratio samples each: longer for up
    out = torch.empty_like(x)
    for i in range(len(x)):  # each clip its own resampling length
        source = stretched[i, : max(2, int(round(n * float(ratio[i]))))]
        out[i] = F.interpolate(source[None, None], size=n, mode="linear", align_corners=False)[0, 0]
    return out


def corrupt_audio(
    wave: Tensor, name: str, severity: int, seed: int, noise_bank: Tensor | None = None
) -> Tensor:
    """One SpeechCmd-C corruption at one severity on clips [B, N] (see the module docstring).
    ``noise_bank``: [M] background noise, needed by ``noise``."""
    if name not in SEVERITIES:
        raise ValueError(f"unknown audio corruption {name!r}; known: {', '.join(SEVERITIES)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1-5, got {severity}")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
    low, high = SEVERITIES[name][severity - 1]
    b, n = wave.shape
    device, dtype = wave.device, wave.dtype
    if name == "reverb":
        rt60 = _uniform(gen, b, low, high)
        h = room_impulse(rt60, _uniform(gen, b, *PRE_DELAY), n, gen).to(device, dtype)
        y = convolve(wave, h)
        return y * (_rms(wave) / _rms(y))
    if name == "noise":
        if noise_bank is None or len(noise_bank) < n:
            raise ValueError("the noise corruption needs a noise bank of at least one clip")
        starts = torch.randint(0, len(noise_bank) - n + 1, (b,), generator=gen)
        segments = noise_bank[starts[:, None] + torch.arange(n)[None, :]].to(device, dtype)
        return snr_mix(wave, segments, _uniform(gen, b, low, high).to(device, dtype))
    if name == "bandlimit":
        kind = torch.randint(0, 3, (b,), generator=gen)  # 0 low-pass, 1 high-pass, 2 band-pass
        lp = _uniform(gen, b, low, high)
        hp = _uniform(gen, b, *HIGH_PASS[severity - 1])
        lp = torch.where(kind == 1, torch.full_like(lp, 1e9), lp)  # 1e9 Hz: no low-pass
        hp = torch.where(kind == 0, torch.full_like(hp, 1e-9), hp)  # 1e-9 Hz: no high-pass
        return band_limit(wave, lp, hp)
    if name == "stretch":
        return time_stretch(wave, 1.0 + _signs(gen, b) * _uniform(gen, b, low, high))
    return pitch_shift(wave, _signs(gen, b) * _uniform(gen, b, low, high))
