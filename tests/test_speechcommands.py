"""``speechcommands`` on a folder of 16 kHz WAV files with the official list files; log-Mel
features against torchaudio; SpeechCmd-C corruptions and the feature augmentations against the
formulas they implement."""

from __future__ import annotations

import math
import subprocess
import sys
import wave

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from uqbench.datamodules import audio_corruptions as ac
from uqbench.datamodules.logmel import fit_clip, log_mel, mel_filterbank, mel_power, snr_mix
from uqbench.datamodules.speechcommands import (
    ID_NOISE,
    KEYWORDS,
    OOD_NOISE,
    OOD_WORDS,
    SILENCE,
    UNKNOWN,
    UNKNOWN_WORDS,
    SpeechCommands,
    spec_augment,
    time_shift,
)

from uqbench.cli import main
from uqbench.errors import DataError

RATE = 16_000


def write_wav(path, samples, rate=RATE, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(pcm, channels).tobytes())


def make_root(root, per_split=(3, 2, 2)):
    """Keyword c is a tone at 300 + 180 c Hz; other words are two-tone chords."""
    rng = np.random.default_rng(0)
    folder = root / "SpeechCommands/speech_commands_v0.02"
    t = np.arange(RATE) / RATE
    lists = {"dev": [], "test": []}

    def clip(freqs, length=RATE):
        x = sum(np.sin(2 * np.pi * f * t[:length]) for f in freqs) * 0.3 / len(freqs)
        return x + rng.normal(0, 0.02, length)

    for c, word in enumerate(KEYWORDS):
        for split, count in zip(("train", "dev", "test"), per_split, strict=True):
            for i in range(count):
                name = f"{word}/{split}{i:02d}_nohash_0.wav"
                length = RATE if i else int(0.6 * RATE)  # some clips are short
                write_wav(folder / name, clip([300 + 180 * c], length))
                if split != "train":
                    lists[split].append(name)
    for k, word in enumerate(UNKNOWN_WORDS + OOD_WORDS):
        for split in ("train", "dev", "test"):
            name = f"{word}/{split}_nohash_0.wav"
            write_wav(folder / name, clip([2500 + 37 * k, 3100 + 11 * k]))
            if split != "train":
                lists[split].append(name)
    for n in ID_NOISE + OOD_NOISE:
        write_wav(folder / "_background_noise_" / f"{n}.wav", rng.normal(0, 0.2, 12 * RATE))
    (folder / "validation_list.txt").write_text("\n".join(lists["dev"]) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    dm = SpeechCommands(root=str(make_root(tmp_path_factory.mktemp("speech"))))
    dm.setup()
    return dm


def test_twelve_classes_from_the_official_lists(data):
    x, y = data.train_set.tensors
    assert x.shape[1:] == (1, 40, 98)
    counts = torch.bincount(y, minlength=12).tolist()
    assert counts == [3] * 10 + [3, 3]  # keywords, unknown and silence subsampled to match
    assert torch.bincount(data.dev_set.tensors[1], minlength=12).tolist() == [2] * 12
    assert torch.bincount(data.test_set.tensors[1], minlength=12).tolist() == [2] * 12
    assert int(y.max()) == SILENCE and UNKNOWN in y.tolist()


def test_ood_sets_are_held_out_words_and_other_noises(data):
    words = data.ood_set("words")
    assert len(words) == len(OOD_WORDS) and (words.tensors[1] == -1).all()
    assert len(data.ood_set("noise")) == 2  # as many as a keyword class in test


def test_cid_and_dev_shift(data):
    names = [s.name for s in data.eval_sets()]
    assert names[0] == "id" and names[-2:] == ["ood/words", "ood/noise"]
    assert len(names) == 1 + 5 * 5 + 2
    a = data.cid_set("reverb", 3).tensors[0]
    assert a.shape == data.test_set.tensors[0].shape
    torch.testing.assert_close(a, data.cid_set("reverb", 3).tensors[0])
    assert not torch.allclose(a, data.test_set.tensors[0])
    assert len(data.dev_shift_set()) == len(data.dev_set)


def test_missing_and_corrupt_files(tmp_path, capsys):
    code = main(["fit", "data=speechcommands", f"data.root={tmp_path}", f"out={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert code == 2 and "validation_list.txt" in err and "_background_noise_" in err
    assert "speech_commands_v0.02.tar.gz" in err and not (tmp_path / "runs").exists()
    root = make_root(tmp_path / "r", per_split=(1, 1, 1))
    bad = root / "SpeechCommands/speech_commands_v0.02/yes/train00_nohash_0.wav"
    write_wav(bad, np.zeros(8000), rate=8000)
    with pytest.raises(DataError, match="8000 Hz, 1 channel.*expected 16,000 Hz mono 16-bit"):
        SpeechCommands(root=str(root)).setup()
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="train00_nohash_0.wav is corrupt"):
        SpeechCommands(root=str(root)).setup()


# -- features ----------------------------------------------------------------------------------


def test_log_mel_shape_normalization_and_padding():
    x = torch.randn(3, RATE) * 0.1
    f = log_mel(x)
    assert f.shape == (3, 1, 40, 98)
    torch.testing.assert_close(f.mean(-1), torch.zeros(3, 1, 40), atol=1e-5, rtol=0)
    short = torch.arange(5.0)
    assert fit_clip(short)[:10].tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]  # reflected
    assert fit_clip(torch.zeros(20000)).shape == (RATE,)


@pytest.mark.slow
def test_mel_power_is_torchaudios(tmp_path):
    """torchaudio 2.11 pins torch 2.11, so it is no dependency: it installs with --no-deps into a
    private folder, and its MelSpectrogram (float32) is the reference, to 1e-5 relative."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            "torchaudio==2.11.0",
        ],
        check=True,
    )
    sys.path.insert(0, str(target))
    try:
        import torchaudio

        x = torch.randn(4, RATE) * 0.2
        reference = torchaudio.transforms.MelSpectrogram(
            sample_rate=RATE, n_fft=512, win_length=400, hop_length=160, n_mels=40, center=False
        )(F.pad(x, (56, 56))).transpose(1, 2)
        ours = mel_power(x)
        assert ours.shape == reference.shape == (4, 98, 40)
        assert float(((ours - reference).abs() / reference.abs().clamp_min(1e-4)).max()) < 1e-5
        bank = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 40, RATE)
        torch.testing.assert_close(mel_filterbank().float(), bank, atol=1e-5, rtol=0)
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith("torchaudio")]:
            del sys.modules[name]


# -- SpeechCmd-C -------------------------------------------------------------------------------


def test_snr_mix_reaches_the_asked_snr():
    x, n = torch.randn(3, RATE), torch.randn(3, RATE) * 5
    snr = torch.tensor([0.0, 7.5, 20.0])
    y = snr_mix(x, n, snr)
    measured = 10 * torch.log10(x.pow(2).mean(-1) / (y - x).pow(2).mean(-1))
    torch.testing.assert_close(measured, snr, atol=1e-4, rtol=0)


def test_room_impulse_decays_60_db_over_rt60():
    gen = torch.Generator().manual_seed(0)
    h = ac.room_impulse(torch.tensor([0.4, 0.9]), torch.tensor([0.0, 0.01]), RATE, gen)
    assert torch.allclose(h[:, 0], torch.ones(2, dtype=h.dtype), atol=0.05)  # the direct path
    assert (h[1, 1:160] == 0).all()  # 10 ms pre-delay: nothing before it
    for row, rt60 in zip(h, (0.4, 0.9), strict=True):
        tail = row[1:].double() ** 2
        edc = torch.flip(torch.cumsum(torch.flip(tail, [0]), 0), [0])  # Schroeder integral
        db = 10 * torch.log10(edc / edc[0])
        t20 = int(torch.nonzero(db < -20)[0]) / RATE  # -20 dB point; x3 gives RT60
        assert abs(3 * t20 - rt60) < 0.1 * rt60


def test_convolution_is_linear_convolution():
    x, h = torch.randn(2, 300, dtype=torch.float64), torch.randn(2, 50, dtype=torch.float64)
    ref = [np.convolve(x[i].numpy(), h[i].numpy())[:300] for i in range(2)]
    np.testing.assert_allclose(ac.convolve(x, h).numpy(), np.stack(ref), atol=1e-10)


def test_band_limit_gain_is_the_butterworth_magnitude_squared():
    t = torch.arange(RATE, dtype=torch.float64) / RATE
    for f in (200.0, 1000.0, 2000.0, 3000.0):
        tone = torch.sin(2 * math.pi * f * t)[None]
        lp, hp = torch.tensor([2000.0]), torch.tensor([500.0])
        out = ac.band_limit(tone, lp, hp)[0, 2000:-2000]
        gain = (out.pow(2).mean() / tone[0, 2000:-2000].pow(2).mean()).sqrt()
        analog = 1 / (1 + (f / 2000) ** 8) / (1 + (500 / f) ** 8)
        assert abs(float(gain) - analog) < 1e-3
        # scipy's digital low-pass and high-pass Butterworth in cascade (filtfilt applies |H|^2)
        # agree but for the bilinear transform's frequency warping
        response = 1.0
        for cutoff, kind in ((2000, "lowpass"), (500, "highpass")):
            sos = scipy.signal.butter(4, cutoff, kind, fs=RATE, output="sos")
            response *= abs(scipy.signal.sosfreqz(sos, [f], fs=RATE)[1][0]) ** 2
        assert abs(float(gain) - response) < 0.02


def _peak_hz(x):
    spectrum = torch.fft.rfft(x).abs()
    return float(spectrum.argmax()) * RATE / len(x)


def test_stretch_keeps_pitch_and_pitch_keeps_duration():
    t = torch.arange(RATE) / RATE
    tone = (0.3 * torch.sin(2 * math.pi * 440 * t))[None]
    assert abs(_peak_hz(ac.time_stretch(tone, torch.tensor([1.1]))[0, :12000]) - 440) < 2
    burst = torch.zeros(1, RATE)
    burst[0, 4000:8000] = tone[0, 4000:8000]
    slower = ac.time_stretch(burst, torch.tensor([0.8]))[0]
    loud = torch.nonzero(slower.abs() > 0.1)
    assert abs((int(loud[-1]) - int(loud[0])) / 4000 - 1 / 0.8) < 0.1
    for n in (2.0, -2.0):
        shifted = ac.pitch_shift(tone, torch.tensor([n]))[0, 2000:14000]
        assert abs(_peak_hz(shifted) - 440 * 2 ** (n / 12)) < 3


@pytest.mark.parametrize("name", list(ac.SEVERITIES))
def test_every_corruption_is_deterministic_and_grows_with_severity(name):
    t = torch.arange(RATE) / RATE
    x = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (300, 700, 1500, 2500)])
    bank = torch.randn(3 * RATE, generator=torch.Generator().manual_seed(0)) * 0.1
    distance = []
    for severity in (1, 5):
        y = ac.corrupt_audio(x, name, severity, seed=3, noise_bank=bank)
        assert y.shape == x.shape and torch.isfinite(y).all()
        torch.testing.assert_close(y, ac.corrupt_audio(x, name, severity, 3, bank))
        distance.append(float((log_mel(y) - log_mel(x)).abs().mean()))
    assert distance[1] > distance[0]


@pytest.mark.parametrize("shape", [(5, 1, 40, 98), (5, 98)])
def test_time_shift_and_spec_augment_on_the_same_draws(shape):
    x = torch.randn(shape)
    out = time_shift(x, 10, torch.Generator().manual_seed(0))
    shifts = torch.randint(-10, 11, (5,), generator=torch.Generator().manual_seed(0))
    assert shifts.abs().max() > 0
    for i, s in enumerate(shifts.tolist()):
        ref = torch.zeros_like(x[i])
        if s >= 0:
            ref[..., s:] = x[i, ..., : 98 - s]
        else:
            ref[..., :s] = x[i, ..., -s:]
        torch.testing.assert_close(out[i], ref)
    masked = spec_augment(torch.ones(200, 1, 40, 98), gen=torch.Generator().manual_seed(1))
    zero_bands = (masked == 0).all(-1).sum(-1).squeeze(1)  # fully masked Mel bands
    zero_frames = (masked == 0).all(-2).sum(-1).squeeze(1)  # fully masked frames
    assert int(zero_bands.max()) <= 10 and int(zero_frames.max()) <= 40
    assert zero_bands.float().mean() > 1 and zero_frames.float().mean() > 5


def test_training_batches_are_waveforms_mixed_with_train_noise_then_features(data):
    waves, labels = next(iter(data.train_dataloader()))
    assert waves.shape[1:] == (16_000,)
    data.augmentation = False
    clean, same = data.augment(waves, labels)
    torch.testing.assert_close(clean, log_mel(waves))
    data.augmentation = True
    torch.manual_seed(0)
    mixed, same = data.augment(waves, labels)
    assert mixed.shape == clean.shape and torch.equal(same, labels)
    # The same draws by hand: shift, a train-stretch noise cut at SNR in [5, 20] dB, features,
    # then SpecAugment's masks (zeros) on top.
    torch.manual_seed(0)
    shifted = time_shift(waves, 1600)
    bank = data._train_noise
    start = torch.randint(0, len(bank) - 16_000 + 1, (len(waves),))
    cuts = bank[start[:, None] + torch.arange(16_000)]
    snr = torch.empty(len(waves)).uniform_(5, 20)
    expected = log_mel(snr_mix(shifted, cuts, snr))
    kept = mixed != 0
    torch.testing.assert_close(mixed[kept], expected[kept])
    assert kept.float().mean() > 0.5 and not torch.allclose(expected, log_mel(shifted))


@pytest.mark.slow
def test_fit_runs_end_to_end(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    code = main(
        [
            "fit",
            "data=speechcommands",
            f"data.root={root}",
            "method=msp",
            "trainer.max_epochs=2",
            f"out={tmp_path}",
            "name=s",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "OOD words 5" in out
