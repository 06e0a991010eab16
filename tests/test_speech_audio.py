"""The audio reader (deepshield.media.audio): mono mix, resampling, tiling, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import shared_path
from deepshield.errors import DataError
from deepshield.media.audio import fix_length, read_audio, read_clip, read_clips, resample


def _sine(freq: float, sr: int, seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.sin(2 * np.pi * freq * t + phase)


def test_stereo_is_mixed_to_mono(tmp_path):
    left = 0.5 * _sine(440, 16000, 0.5)
    right = -0.25 * _sine(440, 16000, 0.5)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    x, record = read_audio(tmp_path / "st.wav")
    assert record.channels == 2 and record.done() == ["mixed 2 channels to mono"]
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_allclose(x, 0.125 * _sine(440, 16000, 0.5), atol=1e-6)


def test_int16_flac_scaled_to_unit_range(tmp_path):
    pcm = (np.array([0, 16384, -32768, 32767, -16384, 1] * 500)).astype(np.int16)  # mean 0
    sf.write(tmp_path / "a.flac", pcm, 16000, subtype="PCM_16")
    x = read_audio(tmp_path / "a.flac")[0]
    np.testing.assert_allclose(x[:4], [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-7)


def test_resampling_a_sine_gives_the_same_sine_at_16k():
    """A 1 kHz tone at 22.05 kHz resampled to 16 kHz equals the tone sampled at 16 kHz."""
    y = resample(_sine(1000, 22050, 1.0), 22050, 16000)
    ref = _sine(1000, 16000, 1.0)
    assert len(y) == 16000
    inner = slice(200, -200)  # the FIR's edge transients aside
    assert np.abs(y[inner] - ref[inner]).max() < 2e-3


def test_read_audio_resamples_to_the_requested_rate(tmp_path):
    sf.write(tmp_path / "t.wav", 0.5 * _sine(300, 44100, 0.5), 44100)
    x = read_audio(tmp_path / "t.wav", rate=16000)[0]
    assert len(x) == 8000
    np.testing.assert_allclose(x[200:-200], 0.5 * _sine(300, 16000, 0.5)[200:-200], atol=2e-3)


def test_fix_length_cuts_and_repeat_pads_like_aasist():
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 7), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(fix_length(x, 3), x)
    np.testing.assert_array_equal(fix_length(np.arange(10.0), 4), [0, 1, 2, 3])
    # AASIST's pad: tile int(max_len / len) + 1 times, then cut
    long = np.random.default_rng(0).standard_normal(1234)
    reps = int(64600 / 1234) + 1
    np.testing.assert_array_equal(fix_length(long, 64600), np.tile(long, reps)[:64600])


@pytest.mark.parametrize(
    "content", [b"", b"this is not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt "]
)
def test_unreadable_files_raise_data_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.wav"):
        read_audio(path)


def test_empty_and_missing_audio_raise_data_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(DataError, match=r"empty\.wav: 0\.000 s of audio; deepshield needs"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(DataError, match=r"nope\.flac: audio file not found"):
        read_clip(tmp_path / "nope.flac")


def test_real_asvspoof_flac_matches_soundfile_and_is_padded():
    path = shared_path(
        "data", "asvspoof2019_la_eval_samples", "flac", "LA_E_2834763.flac"
    )  # 22,831 samples
    ref, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    x, record = read_clip(path)
    assert record.kept_samples == len(ref) and record.tiled == 64600 / len(ref)
    assert x.shape == (64600,) and x.dtype == np.float32
    np.testing.assert_array_equal(x[: len(ref)], ref)
    np.testing.assert_array_equal(x[len(ref) : 2 * len(ref)], ref)


def test_real_22k_wavefake_clips_load_at_16k():
    real = shared_path("data", "speech_wavefake_ljspeech", "real")
    files = sorted(real.glob("*.wav"))[:2]
    frames = [sf.info(f).frames for f in files]
    for f, n in zip(files, frames, strict=True):
        assert len(read_audio(f)[0]) == -(-n * 320 // 441)  # ceil(n * 16000 / 22050)
    batch, rows = read_clips(files, length=16000)
    assert rows.shape[0] == 2
    assert batch.shape == (2, 16000) and batch.dtype == torch.float32
    assert batch.abs().max() <= 1.0 and batch.abs().max() > 0.05


# -- the record and the degenerate-clip policy --------------------------------------------------
def _real_clips() -> list:
    asv = shared_path("data", "asvspoof2019_la_eval_samples", "flac")
    wavefake = shared_path("data", "speech_wavefake_ljspeech")
    return sorted(asv.glob("*.flac")) + sorted(wavefake.rglob("*.wav"))


@pytest.mark.parametrize("length", [64600, 16000])
def test_no_real_shared_clip_is_called_degenerate(length):
    """The policy's thresholds leave every real clip (21: ASVspoof LA + WaveFake) scored."""
    from deepshield.media.degenerate import degenerate_reason

    files = _real_clips()
    assert len(files) == 21
    reasons = {f.name: degenerate_reason(read_clip(f, length=length)[1]) for f in files}
    assert set(reasons.values()) == {None}, reasons


def test_silence_threshold_in_closed_form(tmp_path):
    """A sine of amplitude A has RMS A/sqrt(2): -69 dBFS passes, -71 dBFS is near-silence."""
    from deepshield.media.degenerate import SILENCE_DBFS, degenerate_reason

    for db, flagged in ((SILENCE_DBFS + 1, False), (SILENCE_DBFS - 1, True)):
        amp = np.sqrt(2) * 10 ** (db / 20)
        sf.write(tmp_path / "s.wav", amp * _sine(440, 16000, 1.0), 16000, subtype="FLOAT")
        record = read_clip(tmp_path / "s.wav", length=16000)[1]
        assert record.rms_dbfs == pytest.approx(db, abs=0.01)
        assert (degenerate_reason(record) is not None) == flagged
    sf.write(tmp_path / "z.wav", np.zeros(1600), 16000)
    assert degenerate_reason(read_clip(tmp_path / "z.wav", length=16000)[1]).startswith("digital")


@pytest.mark.parametrize(("share", "flagged"), [(0.005, False), (0.02, True)])
def test_clipping_share_counts_full_scale_16_bit_samples(tmp_path, share, flagged):
    from deepshield.media.degenerate import degenerate_reason

    x = 0.3 * _sine(300, 16000, 1.0)
    x[: int(share * len(x))] = 1.0  # 32767 / 32768 once written as 16-bit PCM
    sf.write(tmp_path / "c.wav", x, 16000, subtype="PCM_16")
    record = read_clip(tmp_path / "c.wav", length=16000)[1]
    assert record.clipped_fraction == pytest.approx(share, abs=1 / 16000)
    assert (degenerate_reason(record) is not None) == flagged


@pytest.mark.parametrize(("seconds", "flagged"), [(0.24, True), (0.26, False)])
def test_far_too_short_is_a_quarter_of_the_models_clip(tmp_path, seconds, flagged):
    from deepshield.media.degenerate import degenerate_reason

    sf.write(tmp_path / "t.wav", 0.3 * _sine(300, 16000, seconds), 16000)
    record = read_clip(tmp_path / "t.wav", length=16000)[1]
    assert record.tiled == pytest.approx(1 / seconds, rel=1e-3)
    assert (degenerate_reason(record) is not None) == flagged


def test_record_round_trips_through_a_meta_row(tmp_path):
    from deepshield.media.audio import AudioRecord

    sf.write(tmp_path / "z.flac", np.zeros((8820, 2)), 44100, subtype="PCM_24")  # 0.2 s
    record = read_clip(tmp_path / "z.flac", length=16000)[1]
    assert record.rms_dbfs == -np.inf and record.as_dict()["rms_dbfs"] is None
    assert AudioRecord.from_row(record.to_row()) == record
    assert record.done()[:2] == ["mixed 2 channels to mono", "resampled from 44100 Hz to 16000 Hz"]


def test_speech_folder_reads_mp3_and_names_the_files_it_skips(tmp_path):
    from deepshield.data import load
    from deepshield.media.audio import records

    for c in ("bonafide", "spoof"):
        (tmp_path / c).mkdir()
        for i in range(2):
            sf.write(tmp_path / c / f"{c}{i}.mp3", 0.3 * _sine(200 + 50 * i, 16000, 0.5), 16000)
    (tmp_path / "spoof" / "notes.txt").write_text("which vocoder\n")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*notes\.txt"):
        s = load(f"speech-folder:{tmp_path}", split="test", length=8000)
    assert len(s.test) == 4
    assert [r.container for r in records(s.test.meta["audio"])] == ["mp3"] * 4


def test_a_file_declaring_over_an_hour_is_refused_from_its_header(tmp_path):
    """61 minutes of silence compress to ~90 KB of FLAC: refused before any frame is decoded."""
    import time

    path = tmp_path / "long.flac"
    with sf.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        for _ in range(61):
            f.write(np.zeros(8000 * 60, np.float32))
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"long\.flac: audio longer than 3600 s"):
        read_audio(path.read_bytes(), name="long.flac")
    assert time.perf_counter() - start < 0.5  # decoding 29 M frames takes seconds


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_cut_anywhere_is_refused_and_the_whole_file_is_read(tmp_path, subtype):
    """Ogg declares no length, and libvorbis/libopus read a cut file as a shorter clip: the last
    page must end the file and carry the end-of-stream mark. Every cut, between pages or
    inside one (header, segment table or payload), is refused; the whole file reads."""
    x = np.random.default_rng(0).uniform(-0.3, 0.3, 3 * 16000).astype(np.float32)
    path = tmp_path / "a.ogg"
    sf.write(path, x, 16000, format="OGG", subtype=subtype)
    data = path.read_bytes()
    pages = [i for i in range(len(data)) if data[i : i + 4] == b"OggS"]
    assert len(read_audio(data, name="whole.ogg")[0]) == len(x)
    cuts = {*pages[2:], *(p + k for p in pages[2:] for k in (3, 20, 27, 40)), len(data) - 1}
    for cut in sorted(cuts):
        with pytest.raises(DataError, match=r"cut\.ogg: truncated audio: its last Ogg page"):
            read_audio(data[:cut], name="cut.ogg")


def test_a_dc_offset_is_removed_and_said(tmp_path):
    """Speech riding on a DC offset reads as the speech alone, with the offset in the record."""
    tone = 0.3 * _sine(440, 16000, 1.0)  # 440 whole periods: mean 0
    sf.write(tmp_path / "dc.wav", tone + 0.05, 16000, subtype="PCM_16")
    sf.write(tmp_path / "plain.wav", tone, 16000, subtype="PCM_16")
    x, record = read_audio(tmp_path / "dc.wav")
    plain, plain_record = read_audio(tmp_path / "plain.wav")
    assert record.dc_offset == pytest.approx(0.05, abs=1e-4)
    assert abs(float(x.mean())) < 1e-6
    np.testing.assert_allclose(x, plain, atol=1e-4)
    assert record.rms_dbfs == pytest.approx(plain_record.rms_dbfs, abs=0.01)  # the tone's level
    assert record.done() == ["removed a DC offset of +0.050"] and plain_record.done() == []


def test_a_constant_level_is_silence(tmp_path):
    """A recorder's constant offset and nothing else is silence, not a clip to score."""
    from deepshield.media.degenerate import degenerate_reason

    sf.write(tmp_path / "hum.wav", np.full(32000, -0.1), 16000, subtype="PCM_16")
    record = read_clip(tmp_path / "hum.wav", length=16000)[1]
    assert record.rms_dbfs == -np.inf
    assert degenerate_reason(record) == (
        "digital silence (every sample is zero) after removing a DC offset of -0.100"
    )


def test_official_aasist_l_scores_a_real_clip_with_a_dc_offset_as_without():
    """The official AASIST-L called a real bona fide clip plus a 0.02 offset P(spoof) 0.72
    (2.5e-5 without) before the reader removed the offset."""
    from deepshield import models
    from deepshield.predict import fake_scores, predict_logits

    flac = shared_path("data", "asvspoof2019_la_eval_samples", "flac", "LA_E_4581379.flac")
    weights = shared_path("data", "pretrained_aasist", "AASIST-L.pth")
    pcm, rate = sf.read(flac, dtype="float64")
    model = models.load_weights(models.create("aasist_l"), weights)
    clips = []
    for offset in (0.0, 0.02):
        buf = io.BytesIO()
        sf.write(buf, 0.9 * pcm + offset, rate, format="WAV", subtype="PCM_16")
        clips.append(read_clip(buf.getvalue(), name=f"dc{offset}.wav")[0])
    p = fake_scores(predict_logits(model, torch.from_numpy(np.stack(clips)))).numpy()  # [2]
    assert p[0] < 1e-3 and p[1] < 1e-3, p


@pytest.mark.parametrize(("channels", "live"), [(2, 0), (6, 2)])
def test_a_dead_channel_is_left_out_of_the_mix(tmp_path, channels, live):
    """A recorder that fills one channel of a stereo (or the centre of a 5.1) file: the mono
    mix is that channel at its own level, not 1/2 (1/6) of it."""
    tone = 0.3 * _sine(440, 16000, 0.5)
    pcm = np.zeros((len(tone), channels))
    pcm[:, live] = tone
    sf.write(tmp_path / "dead.wav", pcm, 16000, subtype="PCM_16")
    sf.write(tmp_path / "mono.wav", tone, 16000, subtype="PCM_16")
    x, record = read_audio(tmp_path / "dead.wav")
    np.testing.assert_array_equal(x, read_audio(tmp_path / "mono.wav")[0])
    assert record.channels == channels and record.silent_channels == channels - 1
    assert record.done() == [f"left out {channels - 1} silent of {channels} channels"]
    pcm[:, live - 1] = 1 / 32768  # one LSB of hiss: a live channel, mixed in
    sf.write(tmp_path / "hiss.wav", pcm, 16000, subtype="PCM_16")
    assert "mixed 2 channels to mono" in read_audio(tmp_path / "hiss.wav")[1].done()


def test_official_aasist_l_scores_a_stereo_file_with_a_dead_channel_as_its_live_one():
    """A real ASVspoof spoof (P(spoof) 0.455 as mono) scored 0.865 with a silent right
    channel averaged in (half its level) before dead channels were left out of the mix."""
    from deepshield import models
    from deepshield.predict import fake_scores, predict_logits

    flac = shared_path("data", "asvspoof2019_la_eval_samples", "flac", "LA_E_3667402.flac")
    weights = shared_path("data", "pretrained_aasist", "AASIST-L.pth")
    pcm, rate = sf.read(flac, dtype="float64")
    model = models.load_weights(models.create("aasist_l"), weights)
    clips = []
    for stereo in (np.stack([pcm, 0 * pcm], 1), np.stack([pcm, pcm], 1)):
        buf = io.BytesIO()
        sf.write(buf, stereo, rate, format="WAV", subtype="PCM_16")
        clips.append(read_clip(buf.getvalue(), name="stereo.wav")[0])
    np.testing.assert_array_equal(clips[0], clips[1])
    p = fake_scores(predict_logits(model, torch.from_numpy(np.stack(clips)))).numpy()  # [2]
    assert p[0] == pytest.approx(0.4553, abs=1e-3)


def test_float_samples_beyond_full_scale_are_scaled_not_clipped(tmp_path):
    """A float WAV peaking at 3.0 holds its whole waveform: it reads as the waveform at peak
    1 (scaled, said in the record), not as a clipped copy called 'heavy clipping'."""
    from deepshield.media.degenerate import degenerate_reason

    noise = np.random.default_rng(0).standard_normal(16000)
    noise -= noise.mean()  # no DC offset to remove
    tone = noise / np.abs(noise).max()  # peak 1, one sample there
    sf.write(tmp_path / "hot.wav", 3 * tone, 16000, subtype="FLOAT")
    x, record = read_audio(tmp_path / "hot.wav")
    np.testing.assert_allclose(x, tone, atol=1e-6)
    assert record.gain == pytest.approx(1 / 3, rel=1e-6)
    assert record.done() == ["scaled by 0.333: float samples up to 3.00"]
    assert degenerate_reason(read_clip(tmp_path / "hot.wav", length=16000)[1]) is None
    sf.write(tmp_path / "ok.wav", 0.5 * tone, 16000, subtype="FLOAT")
    assert read_audio(tmp_path / "ok.wav")[1].gain == 1.0  # within full scale: untouched


def test_a_clipped_recording_stored_lossy_is_still_heavy_clipping(tmp_path):
    """A sine clipped on about half of its samples, as 16-bit WAV and as Opus: the Opus decode
    overshoots full scale around the flat tops; counted before the scaling to peak 1, it is
    still 'heavy clipping' (counted after, none of its samples reach full scale)."""
    import av

    from deepshield.media.degenerate import degenerate_reason

    sr = 16000
    t = np.arange(4 * sr) / sr
    x = np.clip(3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(np.pi * t)), -1, 1)
    pcm = (x * 32767).astype(np.int16)
    sf.write(tmp_path / "loud.wav", pcm, sr, subtype="PCM_16")
    with av.open(str(tmp_path / "loud.ogg"), "w") as c:
        s = c.add_stream("libopus", rate=48000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = sr
        for f in av.AudioResampler(format=s.format.name, layout="mono", rate=48000).resample(frame):
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    for name in ("loud.wav", "loud.ogg"):
        _, record = read_audio(tmp_path / name)
        assert record.clipped_fraction > 0.1, (name, record.clipped_fraction)
        assert degenerate_reason(record).startswith("heavy clipping"), name
    assert read_audio(tmp_path / "loud.ogg")[1].gain < 1.0  # the waveform itself is scaled
