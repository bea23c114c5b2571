"""Log-Mel features of 1 s keyword clips (paper A.2), computed with torch on any device.

16 kHz mono; frames of 25 ms (400 samples) every 10 ms (160), a periodic Hann window, each
frame zero-padded to a 512-point FFT; the power spectrum through 40 triangular Mel filters (HTK
Mel scale, 0 to 8 kHz, unnormalized: torchaudio's ``melscale_fbanks``); log(power + 1e-6); then
per-utterance mean-variance normalization of each Mel band over time. A 1 s clip (16,000
samples) gives 98 frames: the 40 x 98 input of the DS-CNN (paper B.1). Shorter clips are
reflect-padded to 1 s first (paper A.2), longer ones cut.

The power spectrum equals torchaudio's ``MelSpectrogram(n_fft=512, win_length=400,
hop_length=160, n_mels=40, center=False)`` on the clip zero-padded by 56 samples at each end
(torch.stft centres the 400-sample window in the 512-sample frame; a frame's zero-padding
position changes only the phase), which ``tests/test_speechcommands.py`` checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16_000
CLIP = SAMPLE_RATE  # samples in 1 s
WINDOW, HOP, N_FFT, N_MELS = 400, 160, 512, 40
FRAMES = 1 + (CLIP - WINDOW) // HOP  # 98


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE
) -> Tensor:
    """[n_freqs, n_mels] triangular filters on the HTK Mel scale from 0 Hz to Nyquist
    (float64)."""
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    top = float(_hz_to_mel(torch.tensor(sample_rate / 2.0, dtype=torch.float64)))
    points = _mel_to_hz(torch.linspace(0, top, n_mels + 2, dtype=torch.float64))
    widths = points[1:] - points[:-1]  # [n_mels + 1]
    slopes = points[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(down, up), min=0)  # float64


def fit_clip(wave: Tensor) -> Tensor:
    """[..., N] -> [..., 16000]: reflect-padded (shorter) or cut (longer) to 1 s. Reflection
    repeats as often as needed (a 0.3 s clip mirrors back and forth)."""
    n = wave.shape[-1]
    if n >= CLIP:
        return wave[..., :CLIP]
    if n < 2:
        return F.pad(wave, (0, CLIP - n))
    period = 2 * n - 2
    index = torch.arange(CLIP, device=wave.device) % period
    return wave[..., torch.where(index < n, index, period - index)]


def mel_power(wave: Tensor) -> Tensor:
    """[B, 16000] -> [B, 98, 40]: Mel power per frame (before the log)."""
    frames = wave.unfold(-1, WINDOW, HOP)  # [B, 98, 400]
    window = torch.hann_window(WINDOW, periodic=True, device=wave.device, dtype=wave.dtype)
    spectrum = torch.fft.rfft(frames * window, n=N_FFT).abs() ** 2  # [B, 98, 257]
    return spectrum @ mel_filterbank().to(wave.device, wave.dtype)


def log_mel(wave: Tensor) -> Tensor:
    """[B, N] waveforms in [-1, 1] -> [B, 1, 40, 98] normalized log-Mel features."""
    logs = torch.log(mel_power(fit_clip(wave)) + 1e-6).transpose(1, 2)  # [B, 40, 98]
    mean = logs.mean(-1, keepdim=True)
    std = logs.std(-1, keepdim=True, unbiased=False)
    return ((logs - mean) / (std + 1e-5))[:, None]


def snr_mix(wave: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """wave + noise scaled so that 10 log10(P_wave / P_noise) = ``snr_db`` per clip ([B])."""
    p_wave = wave.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    p_noise = noise.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    scale = torch.sqrt(p_wave / (p_noise * 10 ** (snr_db[:, None] / 10)))
    return wave + scale * noise
