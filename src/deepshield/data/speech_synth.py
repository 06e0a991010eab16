"""Synthetic speech: a source-filter synthesiser (bona fide) and three vocoders (spoofs).

Bona fide utterances come from a Klatt-style cascade formant synthesiser (Klatt, JASA 1980):
a Rosenberg glottal pulse train (Rosenberg, JASA 1971) with a pitch contour (declination, pitch
accents, slow drift), per-period jitter and shimmer, breathy aspiration and spectral tilt; four
2nd-order resonators per frame (F1-F3 from Peterson & Barney's vowel table, F4 3.5 kHz, scaled per
speaker), updated every 5 ms; fricative and burst noise in parallel; phrase-level amplitude
envelopes and pauses. A `Speaker` fixes f0 range, formant scale, bandwidths, speaking rate,
jitter, shimmer, breathiness, open quotient and tilt.

Spoofs re-synthesise the same clean utterance, as TTS / voice-conversion back ends do:
- `griffin_lim`: 80-band mel magnitude (n_fft 1024, hop 256, a TTS front end) -> linear
  magnitude by mel-band interpolation -> fast Griffin-Lim phase (32 iterations).
- `lpc_vocoder`: an LPC-10 style vocoder: per 10 ms frame an order-18 LPC envelope, gain and
  f0 and voicing from the normalised autocorrelation; re-excited by an impulse train or white noise.
- `sinusoidal`: a harmonic-plus-noise model: per STFT frame the 60 largest spectral peaks are kept
  as sinusoids at bin-centre frequencies with phases propagated frame to frame, the rest of the
  spectrum is replaced by noise of the same magnitude (random phase).
`record` then puts bona fide and spoofed audio alike through a random room, microphone high-pass,
background noise and level, so the channel carries no label.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy import signal

SR = 16000
FRAME = 80  # control-parameter update: 5 ms at 16 kHz, as in Klatt's synthesiser
F4 = 3500.0

# Peterson & Barney (1952), adult male averages: F1, F2, F3 in Hz.
VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010),
    "I": (390, 1990, 2550),
    "E": (530, 1840, 2480),
    "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440),
    "o": (570, 840, 2410),
    "U": (440, 1020, 2240),
    "u": (300, 870, 2240),
    "V": (640, 1190, 2390),
    "R": (490, 1350, 1690),
}


@dataclass(frozen=True)
class Phone:
    """Targets of one phone; `formants=None` takes the neighbours' (interpolated)."""

    formants: tuple[float, float, float] | None
    duration: float  # s, at speaking rate 1
    voicing: float = 0.0  # glottal source gain
    aspiration: float = 0.0  # noise through the vocal tract
    frication: float = 0.0  # parallel band noise gain
    band: tuple[float, float] = (0.0, 0.0)  # frication band (Hz)


SILENCE = Phone(None, 0.0)
CONSONANTS: dict[str, tuple[Phone, ...]] = {  # a plosive is closure + release
    "m": (Phone((280, 1100, 2300), 0.07, voicing=0.35),),
    "n": (Phone((280, 1600, 2600), 0.06, voicing=0.35),),
    "l": (Phone((360, 1300, 2700), 0.06, voicing=0.6),),
    "r": (Phone((420, 1300, 1600), 0.06, voicing=0.6),),
    "w": (Phone((300, 700, 2200), 0.05, voicing=0.6),),
    "j": (Phone((280, 2200, 2900), 0.05, voicing=0.6),),
    "h": (Phone(None, 0.06, aspiration=0.35),),
    "s": (Phone(None, 0.10, frication=0.06, band=(3800, 7500)),),
    "S": (Phone(None, 0.10, frication=0.06, band=(1800, 5500)),),
    "f": (Phone(None, 0.09, frication=0.02, band=(1200, 7500)),),
    "z": (Phone(None, 0.08, voicing=0.3, frication=0.035, band=(3800, 7500)),),
    "v": (Phone(None, 0.07, voicing=0.35, frication=0.015, band=(1200, 7500)),),
    "p": (Phone(None, 0.06), Phone(None, 0.03, aspiration=0.25, frication=0.075, band=(400, 2500))),
    "t": (
        Phone(None, 0.05),
        Phone(None, 0.03, aspiration=0.25, frication=0.075, band=(3000, 7000)),
    ),
    "k": (
        Phone(None, 0.06),
        Phone(None, 0.035, aspiration=0.25, frication=0.075, band=(1500, 4000)),
    ),
    "b": (Phone(None, 0.05, voicing=0.12), Phone(None, 0.015, frication=0.06, band=(400, 2500))),
    "d": (Phone(None, 0.045, voicing=0.12), Phone(None, 0.015, frication=0.06, band=(3000, 7000))),
    "g": (Phone(None, 0.05, voicing=0.12), Phone(None, 0.02, frication=0.06, band=(1500, 4000))),
}
ONSETS = ["", "", *CONSONANTS, "st", "pl", "kr", "tr", "bl", "gr", "sp", "fr"]
CODAS = ["", "", "", "m", "n", "l", "r", "s", "t", "k", "d", "z", "st", "nd", "ts"]


@dataclass(frozen=True)
class Speaker:
    """Voice of one synthetic speaker."""

    f0: float  # mean fundamental frequency (Hz)
    formant_scale: float  # vocal-tract length factor (1 = adult male table)
    bandwidths: tuple[float, float, float, float]  # formant bandwidths (Hz)
    rate: float  # speaking-rate factor (>1 faster)
    jitter: float  # std of the relative per-period f0 perturbation
    shimmer: float  # std of the relative per-period amplitude perturbation
    breathiness: float  # pulsatile aspiration relative to voicing
    open_quotient: float  # open phase / period of the glottal pulse
    tilt: float  # one-pole low-pass coefficient on the glottal source (spectral tilt)


def random_speaker(rng: np.random.Generator) -> Speaker:
    """A speaker with a low (85-145 Hz) or high (165-250 Hz) voice and matching tract length."""
    high = rng.random() < 0.5
    return Speaker(
        f0=rng.uniform(165, 250) if high else rng.uniform(85, 145),
        formant_scale=rng.uniform(1.08, 1.22) if high else rng.uniform(0.92, 1.05),
        bandwidths=(
            rng.uniform(55, 90),
            rng.uniform(70, 120),
            rng.uniform(110, 180),
            rng.uniform(180, 280),
        ),
        rate=rng.uniform(0.8, 1.25),
        jitter=rng.uniform(0.003, 0.015),
        shimmer=rng.uniform(0.02, 0.08),
        breathiness=rng.uniform(0.02, 0.15),
        open_quotient=rng.uniform(0.45, 0.75),
        tilt=rng.uniform(0.0, 0.4),
    )


@dataclass
class _Segment:
    phone: Phone
    seconds: float
    gain: float  # phrase envelope x stress
    stressed: bool = False


def _script(speaker: Speaker, seconds: float, rng: np.random.Generator) -> list[_Segment]:
    """Phones with durations and gains: phrases of syllables separated by pauses."""
    segs = [_Segment(SILENCE, rng.uniform(0.05, 0.3), 0.0)]
    total = segs[0].seconds
    vowels = list(VOWELS)
    while total < seconds:
        n_syll = int(rng.integers(3, 10))
        for s in range(n_syll):
            gain = 1.0 - 0.4 * s / n_syll  # declining phrase envelope
            stressed = rng.random() < 0.35
            onset, coda = ONSETS[rng.integers(len(ONSETS))], CODAS[rng.integers(len(CODAS))]
            vowel = Phone(VOWELS[vowels[rng.integers(len(vowels))]], 0.11, voicing=1.0)
            phones = [p for c in onset for p in CONSONANTS[c]]
            phones += [vowel] + [p for c in coda for p in CONSONANTS[c]]
            for p in phones:
                dur = p.duration * (1.35 if p is vowel and stressed else 1.0)
                dur *= rng.lognormal(0.0, 0.15) / speaker.rate
                g = gain * (1.3 if stressed else 1.0) * rng.lognormal(0.0, 0.2)
                segs.append(_Segment(p, dur, g, stressed and p is vowel))
                total += dur
        pause = rng.uniform(0.12, 0.35)
        segs.append(_Segment(SILENCE, pause, 0.0))
        total += pause
    return segs


def _smooth(track: np.ndarray, width: int) -> np.ndarray:
    """Moving Hann average along axis 0 (edges held), track: [n, ...]."""
    w = np.hanning(width + 2)[1:-1]
    w /= w.sum()
    pad = width // 2
    padded = np.concatenate([np.repeat(track[:1], pad, 0), track, np.repeat(track[-1:], pad, 0)])
    return np.apply_along_axis(lambda v: np.convolve(v, w, mode="valid"), 0, padded)[: len(track)]


def _rosenberg(phase: np.ndarray, open_quotient: float) -> np.ndarray:
    """Glottal flow in [0, 1] at fractional period positions phase [T] in [0, 1)."""
    tp, tn = 0.65 * open_quotient, 0.35 * open_quotient  # opening, closing portions
    flow = np.zeros_like(phase)
    rising = phase < tp
    falling = (phase >= tp) & (phase < tp + tn)
    flow[rising] = 0.5 * (1.0 - np.cos(np.pi * phase[rising] / tp))
    flow[falling] = np.cos(0.5 * np.pi * (phase[falling] - tp) / tn)
    return flow


def _cascade(x: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Time-varying cascade of unity-DC-gain resonators (Klatt): x [T], formants [n_frames, 4]."""
    r = np.exp(-np.pi * bandwidths / SR)  # [4] pole radii
    b = 2.0 * r * np.cos(2.0 * np.pi * np.minimum(formants, 0.45 * SR) / SR)  # [n_frames, 4]
    c = -(r**2)  # [4]
    # per frame, the product of the sections' denominators 1 - b z^-1 - c z^-2: [n_frames, 9]
    den = np.ones((len(formants), 1))
    for i in range(4):
        nxt = np.zeros((len(den), den.shape[1] + 2))
        nxt[:, :-2] += den
        nxt[:, 1:-1] -= b[:, i : i + 1] * den
        nxt[:, 2:] -= c[i] * den
        den = nxt
    gain = np.prod(1.0 - b - c, axis=1)  # [n_frames] unity gain at DC
    out = np.empty_like(x)
    zi = np.zeros(8)
    for k in range(len(formants)):
        sl = slice(k * FRAME, (k + 1) * FRAME)
        out[sl], zi = signal.lfilter(gain[k : k + 1], den[k], x[sl], zi=zi)
    return out


def _band_noise(n: int, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """n samples of white noise band-passed to `band` (4th-order Butterworth)."""
    sos = signal.butter(2, band, btype="bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def synthesize(speaker: Speaker, length: int, rng: np.random.Generator) -> np.ndarray:
    """One clean utterance of `speaker`: float64 [length], peak 0.5."""
    segs = _script(speaker, length / SR, rng)
    ends = np.round(np.cumsum([s.seconds for s in segs]) * SR / FRAME).astype(int)
    n_frames = max(int(ends[-1]), -(-length // FRAME))
    starts = np.concatenate([[0], ends[:-1]])
    # per-frame targets (NaN formants where a phone takes its neighbours')
    formants = np.full((n_frames, 3), np.nan)
    voicing, aspiration = np.zeros(n_frames), np.zeros(n_frames)
    accents = []
    for seg, a, e in zip(segs, starts, ends, strict=True):
        e = max(e, a + 1)
        if seg.phone.formants is not None:
            formants[a:e] = seg.phone.formants
        voicing[a:e] = seg.phone.voicing * seg.gain
        aspiration[a:e] = seg.phone.aspiration * seg.gain
        if seg.stressed:
            accents.append(0.5 * (a + e))
    frames = np.arange(n_frames)
    known = ~np.isnan(formants[:, 0])
    if not known.any():
        formants[:] = VOWELS["V"]
        known[:] = True
    formants = np.stack([np.interp(frames, frames[known], f[known]) for f in formants.T], 1)
    formants = np.concatenate([formants, np.full((n_frames, 1), F4)], 1)  # [n_frames, 4]
    formants = _smooth(formants, 9) * speaker.formant_scale  # 45 ms coarticulation
    voicing, aspiration = _smooth(voicing, 3), _smooth(aspiration, 3)

    # pitch: declination over the utterance, accents on stressed vowels, slow drift
    f0 = speaker.f0 * np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.75, 0.9), n_frames)
    for centre in accents:
        f0 *= 1.0 + rng.uniform(0.08, 0.25) * np.exp(-0.5 * ((frames - centre) / 16.0) ** 2)
    drift = _smooth(rng.standard_normal(n_frames), 41)  # ~200 ms correlation
    f0 *= 1.0 + 0.02 * drift / (drift.std() + 1e-12)  # 2 % (std) slow wander
    t = (np.arange(n_frames * FRAME) + 0.5) / FRAME - 0.5  # sample time in frames
    f0_s = np.interp(t, frames, f0)  # [T']
    period = np.floor(np.cumsum(f0_s / SR)).astype(int)
    f0_s *= 1.0 + speaker.jitter * rng.standard_normal(period[-1] + 2)[period]
    phase = np.cumsum(f0_s / SR)
    period = np.floor(phase).astype(int)
    flow = _rosenberg(phase - period, speaker.open_quotient)
    flow *= 1.0 + speaker.shimmer * rng.standard_normal(period[-1] + 2)[period]

    # source: differentiated flow (lip radiation) with tilt, plus aspiration noise
    voiced = np.diff(flow, prepend=0.0)
    voiced = signal.lfilter([1.0 - speaker.tilt], [1.0, -speaker.tilt], voiced)
    voiced /= np.abs(voiced).max() + 1e-12
    noise = rng.standard_normal(len(flow))
    v_s, a_s = np.interp(t, frames, voicing), np.interp(t, frames, aspiration)
    excitation = v_s * (voiced + speaker.breathiness * flow * noise) + 0.3 * a_s * noise
    speech = _cascade(excitation, formants, np.asarray(speaker.bandwidths))

    # frication and bursts in parallel, each with a tapered envelope
    fric = np.zeros_like(speech)
    for seg, a, e in zip(segs, starts, ends, strict=True):
        if seg.phone.frication <= 0 or a * FRAME >= len(fric):
            continue
        s0, s1 = a * FRAME, min(max(e, a + 1) * FRAME, len(fric))
        env = signal.windows.tukey(s1 - s0, 0.4)
        hi = min(seg.phone.band[1] * speaker.formant_scale, 0.475 * SR)
        band = (min(seg.phone.band[0] * speaker.formant_scale, 0.6 * hi), hi)
        fric[s0:s1] += seg.phone.frication * seg.gain * env * _band_noise(s1 - s0, band, rng)
    speech = speech / (np.abs(speech).max() + 1e-12) + fric
    speech = speech[:length]
    return 0.5 * speech / (np.abs(speech).max() + 1e-12)


def _fit(y: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length`."""
    return y[:length] if len(y) >= length else np.pad(y, (0, length - len(y)))


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """x [T] -> complex [n_fft//2 + 1, frames]: centred frames, periodic Hann window."""
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # [frames, n_fft]
    frames = frames[: len(x) // hop + 1]
    window = signal.get_window("hann", n_fft).astype(x.dtype)
    return np.fft.rfft(frames * window, axis=1).T


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of `_stft` by weighted overlap-add: complex [F, frames] -> [length]."""
    frames = np.fft.irfft(spec.T, n=n_fft, axis=1)  # [frames, n_fft]
    window = signal.get_window("hann", n_fft).astype(frames.dtype)
    frames *= window
    n_frames, r = len(frames), n_fft // hop
    out = np.zeros((n_frames + r, hop), dtype=frames.dtype)
    norm = np.zeros((n_frames + r, hop), dtype=frames.dtype)
    for j in range(r):  # chunk j of frame f lands in output chunk f + j
        out[j : j + n_frames] += frames[:, j * hop : (j + 1) * hop]
        norm[j : j + n_frames] += window[j * hop : (j + 1) * hop] ** 2
    y = out.ravel() / np.maximum(norm.ravel(), 1e-8)
    return _fit(y[n_fft // 2 :], length)


def griffin_lim(x: np.ndarray, rng: np.random.Generator, n_iter: int = 32) -> np.ndarray:
    """x [T] -> mel-spectrogram (80 bands) -> interpolated magnitude -> Griffin-Lim [T].

    Phase by fast Griffin-Lim (Perraudin et al., 2013; momentum 0.99) from random phases,
    in single precision (about 3x faster than double, same result to the ear).
    """
    n_fft, hop = 1024, 256
    x = x.astype(np.float32)
    mag = np.abs(_stft(x, n_fft, hop))  # [513, frames]
    fb = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=80)  # [80, 513] float32
    band_level = (fb @ mag) / fb.sum(1, keepdims=True)  # [80, frames] mean magnitude per band
    cover = fb.sum(0)  # [513]
    weights = np.divide(fb, cover, out=np.zeros_like(fb), where=cover > 0)  # [80, 513]
    mag_hat = weights.T @ band_level  # [513, frames]
    angles = np.exp(2j * np.pi * rng.random(mag_hat.shape, dtype=np.float32))
    previous = np.zeros_like(angles)
    momentum = 0.99
    for _ in range(n_iter):
        rebuilt = _stft(_istft(mag_hat * angles, n_fft, hop, len(x)), n_fft, hop)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles /= np.abs(angles) + 1e-16
        previous = rebuilt
    return _istft(mag_hat * angles, n_fft, hop, len(x)).astype(np.float64)


def _lpc(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation-method LPC (Levinson-Durbin) of frames [n, win] -> a [n, order+1], error [n]."""
    spec = np.fft.rfft(frames, 2 * frames.shape[1], axis=1)
    r = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : order + 1]  # [n, order+1]
    r[:, 0] *= 1.0 + 1e-6  # white-noise correction: keeps the recursion well conditioned
    r[:, 0] += 1e-12
    a = np.zeros_like(r)
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(r[:, i] + (a[:, 1:i] * r[:, i - 1 : 0 : -1]).sum(1)) / err  # reflection coeffs
        a[:, 1:i] += k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err *= 1.0 - k**2
    return a, err


def _pitch(
    frames: np.ndarray, fmin: float = 60.0, fmax: float = 400.0
) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation pitch of frames [n, win]: f0 [n] (Hz) and its normalised correlation [n]."""
    win = frames.shape[1]
    centred = frames - frames.mean(1, keepdims=True)
    spec = np.fft.rfft(centred * np.hanning(win), 2 * win, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]  # [n, win]
    acf /= np.fft.irfft(np.abs(np.fft.rfft(np.hanning(win), 2 * win)) ** 2)[:win]  # window bias
    lo, hi = int(SR / fmax), int(SR / fmin)
    search = acf[:, lo:hi]  # [n, lags]
    # the shortest lag within 10 % of the best one: multiples of the period score as high
    lag = lo + np.argmax(search >= 0.9 * search.max(1, keepdims=True), axis=1)  # [n]
    nccf = acf[np.arange(len(acf)), lag] / np.maximum(acf[:, 0], 1e-12)
    return SR / lag, nccf


def _dispersion_pulse(n: int = 128) -> np.ndarray:
    """A flat-spectrum chirp [n] of unit energy: spreads each excitation impulse over ~4 ms
    (the pulse dispersion filter of MELP vocoders, McCree & Barnwell 1995)."""
    k = np.arange(n // 2 + 1)
    h = np.fft.irfft(np.exp(1j * np.pi * k**2 / (n // 2)), n)
    return h / np.sqrt((h**2).sum())


_DISPERSION = _dispersion_pulse()


def lpc_vocoder(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x [T] -> per-10 ms LPC envelope, gain, f0 and voicing -> pulse/noise excitation [T]."""
    order, win, pitch_win, hop = 18, 400, 640, 160
    padded = np.pad(x, (pitch_win // 2, pitch_win))
    n = -(-len(x) // hop)
    long = np.lib.stride_tricks.sliding_window_view(padded, pitch_win)[::hop][:n]  # [n, 640]
    off = (pitch_win - win) // 2
    frames = long[:, off : off + win]  # [n, 400], frame k centred on sample k*hop
    window = np.hanning(win)
    a, err = _lpc(frames * window, order)  # [n, order+1], [n]
    gain = np.sqrt(err / (window**2).sum())  # excitation std matching the frame's residual
    f0, nccf = _pitch(long)  # [n]
    voiced = nccf > 0.5
    # excitation: unit-power impulse train at f0 (voiced) or white noise (unvoiced)
    f0_s = np.repeat(np.where(voiced, f0, 0.0), hop)  # [n*hop]
    wraps = np.diff(np.floor(np.cumsum(f0_s / SR)), prepend=0.0)
    pulses = np.convolve(wraps * np.sqrt(SR / np.maximum(f0_s, 1.0)), _DISPERSION)[: n * hop]
    exc = np.where(np.repeat(voiced, hop), pulses, rng.standard_normal(n * hop))
    exc *= np.interp(np.arange(n * hop), np.arange(n) * hop, gain)  # gain between frame centres
    # frame k's filter covers the samples nearest its centre k*hop
    edges = np.concatenate([[0], np.arange(n - 1) * hop + hop // 2, [n * hop]])
    out = np.empty(n * hop)
    zi = np.zeros(order)
    for k in range(n):
        sl = slice(edges[k], edges[k + 1])
        out[sl], zi = signal.lfilter([1.0], a[k], exc[sl], zi=zi)
    return _fit(out, len(x))


def sinusoidal(x: np.ndarray, rng: np.random.Generator, peaks: int = 60) -> np.ndarray:
    """x [T] -> harmonic-plus-noise resynthesis: peak sinusoids at bin centres + noise [T]."""
    n_fft, hop = 1024, 128
    mag = np.abs(_stft(x, n_fft, hop))  # [513, frames]
    n_bins, n_frames = mag.shape
    is_peak = np.zeros_like(mag, dtype=bool)
    is_peak[1:-1] = (mag[1:-1] > mag[:-2]) & (mag[1:-1] >= mag[2:])
    rank = np.argsort(np.argsort(-np.where(is_peak, mag, 0.0), axis=0), axis=0)
    keep = is_peak & (rank < peaks) & (mag > 1e-3 * mag.max(0, keepdims=True))
    keep[1:] |= keep[:-1]  # each peak with its neighbours (the window's main lobe)
    keep[:-1] |= keep[1:]
    advance = 2.0 * np.pi * hop * np.arange(n_bins) / n_fft  # bin-centre phase advance per hop
    phase = rng.uniform(-np.pi, np.pi, n_bins)[:, None] + advance[:, None] * np.arange(n_frames)
    noise_phase = rng.uniform(-np.pi, np.pi, mag.shape)
    return _istft(mag * np.exp(1j * np.where(keep, phase, noise_phase)), n_fft, hop, len(x))


VOCODERS = {"griffin-lim": griffin_lim, "lpc-vocoder": lpc_vocoder, "sinusoidal": sinusoidal}


def record(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room, microphone and noise: x [T] -> [T] at a random RMS level of -32 to -20 dBFS."""
    rt60 = rng.uniform(0.08, 0.35)
    t = np.arange(int(rt60 * SR)) / SR
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir = rng.uniform(0.03, 0.2) * tail / np.sqrt((tail**2).sum())
    ir[0] = 1.0  # direct path
    y = signal.fftconvolve(x, ir)[: len(x)]
    y = signal.sosfilt(signal.butter(2, rng.uniform(40, 100), "highpass", fs=SR, output="sos"), y)
    white = rng.standard_normal(len(y))
    noise = white + rng.uniform(0, 4) * signal.lfilter([0.05], [1.0, -0.95], white)
    snr_db = rng.uniform(25, 45)
    power = np.mean(y**2) / np.mean(noise**2)
    y = y + noise * np.sqrt(power / 10 ** (snr_db / 10))
    y = y * 10 ** (rng.uniform(-32, -20) / 20) / (np.sqrt(np.mean(y**2)) + 1e-12)
    return np.clip(y, -1.0, 1.0)
