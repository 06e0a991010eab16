"""Audio dataset sources: speech-folder and asvspoof protocol files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import shared_path
from deepshield.data import all_sources, load
from deepshield.data.sources.asvspoof import read_protocol
from deepshield.errors import ConfigError, DataError
from deepshield.media.audio import read_clip


def _write_folder(root, n_per_class=5, names=("bonafide", "spoof"), rates=(8000, 16000, 44100)):
    rng = np.random.default_rng(0)
    for c in names:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            sr = rates[i % len(rates)]
            sf.write(root / c / f"{c}_{i}.wav", 0.3 * rng.standard_normal(sr // 4), sr)
    return root


def test_audio_sources_are_registered_as_audio():
    by_prefix = {s.prefix: s for s in all_sources()}
    for prefix in ("speech-folder", "asvspoof", "synthetic-speech"):
        assert by_prefix[prefix].modality == "audio"
    assert by_prefix["synthetic-speech"].builtin


def test_speech_folder_split_is_stratified_complete_and_seeded(tmp_path):
    root = _write_folder(tmp_path / "d", n_per_class=10)
    s = load(f"speech-folder:{root}", seed=3, length=8000)
    assert s.modality == "audio" and s.sample_rate == 16000
    assert s.counts()["test"] == {"bonafide": 2, "spoof": 2, "total": 4}
    assert s.counts()["train"]["total"] == 12
    names = s.train.names + s.val.names + s.test.names
    assert sorted(names) == sorted(f"{c}_{i}" for c in ("bonafide", "spoof") for i in range(10))
    for part in (s.train, s.val, s.test):
        assert part.x.shape[1:] == (8000,) and part.x.dtype == torch.float32
        for name, label in zip(part.names, part.y.tolist(), strict=True):
            assert label == (name.startswith("spoof"))
    # a 0.25 s clip repeat-padded to 0.5 s: second half equals the first
    x = s.train.x[0]
    assert torch.equal(x[:4000], x[4000:])
    again = load(f"speech-folder:{root}", seed=3, length=8000)
    assert again.test.names == s.test.names
    other = load(f"speech-folder:{root}", seed=4, length=8000)
    assert other.test.names != s.test.names


def test_speech_folder_keeps_a_given_train_test_split(tmp_path):
    _write_folder(tmp_path / "d" / "train", n_per_class=5, names=("real", "fake"))
    _write_folder(tmp_path / "d" / "test", n_per_class=2, names=("real", "fake"))
    s = load(f"speech-folder:{tmp_path / 'd'}", length=4000, val_frac=0.2)
    assert s.counts()["test"]["total"] == 4
    assert s.counts()["val"] == {"bonafide": 1, "spoof": 1, "total": 2}
    assert s.counts()["train"]["total"] == 8


def test_speech_folder_n_is_a_stratified_subset_and_unknown_options_are_named(tmp_path):
    root = _write_folder(tmp_path / "d", n_per_class=10)
    s = load(f"speech-folder:{root}", seed=3, length=4000, n=10)
    total = {
        c: sum(s.counts()[k][c] for k in ("train", "val", "test")) for c in ("bonafide", "spoof")
    }
    assert total == {"bonafide": 5, "spoof": 5}
    assert s.test.names == load(f"speech-folder:{root}", seed=3, length=4000, n=10).test.names
    with pytest.raises(ConfigError, match=r"speech-folder: no option size; it accepts length"):
        load(f"speech-folder:{root}", size=32)


def test_speech_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "only" / "bonafide").mkdir(parents=True)
    sf.write(tmp_path / "only" / "bonafide" / "a.wav", np.zeros(800), 16000)
    with pytest.raises(DataError, match=r"spoof/ or fake/"):
        load(f"speech-folder:{tmp_path / 'only'}")
    with pytest.raises(DataError, match="folder not found"):
        load(f"speech-folder:{tmp_path / 'absent'}")
    root = _write_folder(tmp_path / "bad", n_per_class=3)
    (root / "spoof" / "spoof_1.wav").write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match=r"spoof_1\.wav: not an audio file"):
        load(f"speech-folder:{root}")
    with pytest.raises(ConfigError):
        load("speech-folder")


def test_speech_folder_on_real_wavefake_clips():
    root = shared_path("data", "speech_wavefake_ljspeech")
    s = load(f"speech-folder:{root}", length=16000, val_frac=0.2, test_frac=0.2)
    total = {
        k: sum(s.counts()[p][k] for p in ("train", "val", "test")) for k in ("bonafide", "spoof")
    }
    assert total == {"bonafide": 5, "spoof": 5}  # special/ is not a class folder


def test_asvspoof_real_eval_clips_follow_the_protocol():
    protocol = shared_path("data", "asvspoof2019_la_eval_samples", "protocol.txt")
    s = load(f"asvspoof:{protocol}", split="test")
    assert s.counts()["train"]["total"] == 0 and s.counts()["val"]["total"] == 0
    assert s.counts()["test"] == {"bonafide": 5, "spoof": 5, "total": 10}
    lines = [line.split() for line in protocol.read_text().splitlines()]
    assert s.test.names == [f[1] for f in lines]
    assert s.test.y.tolist() == [int(f[4] == "spoof") for f in lines]
    codes = dict(item.split("=") for item in s.notes.split(": ", 1)[1].split(" (")[0].split(", "))
    assert [codes[str(c)] for c in s.test.meta["system"].tolist()] == [f[3] for f in lines]
    first = read_clip(protocol.parent / "flac" / f"{lines[0][1]}.flac")[0]
    assert torch.equal(s.test.x[0], torch.from_numpy(first))


def test_asvspoof_audio_dir_and_default_split(tmp_path):
    samples = shared_path("data", "asvspoof2019_la_eval_samples")
    protocol = tmp_path / "cm.eval.txt"
    protocol.write_text((samples / "protocol.txt").read_text())
    with pytest.raises(
        DataError, match=r"cm\.eval\.txt:1: audio file .*LA_E_2834763\.flac not found"
    ):
        load(f"asvspoof:{protocol}")
    s = load(f"asvspoof:{protocol}", audio_dir=samples / "flac", length=16000, seed=1)
    for part in ("train", "val", "test"):
        c = s.counts()[part]
        assert c["bonafide"] == c["spoof"] >= 1
    assert s.test.x.shape[1] == 16000
    assert s.test.meta["system"].shape == (len(s.test),)
    assert ((s.test.meta["system"] == 0) == (s.test.y == 0)).all()


def test_a_protocol_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    """A BOM (Windows Notepad's UTF-8) would otherwise be glued to the first speaker id."""
    samples = shared_path("data", "asvspoof2019_la_eval_samples")
    plain = read_protocol(samples / "protocol.txt")
    bom = tmp_path / "protocol.txt"
    bom.write_text("\ufeff" + (samples / "protocol.txt").read_text())
    assert read_protocol(bom) == plain and plain[0].speaker == "LA_0039"


def test_asvspoof_malformed_lines_name_file_and_line(tmp_path):
    good = "LA_0039 LA_E_2834763 - A11 spoof\nLA_0028 LA_E_3757378 - - bonafide\n"
    cases = {
        "LA_0001 LA_E_1 - A07\n": 3,  # 4 fields
        "LA_0001 LA_E_1 - A07 genuine\n": 3,  # unknown key
        "LA_0039 LA_E_2834763 - A11 spoof\n": 3,  # duplicate utterance
    }
    for bad, line in cases.items():
        p = tmp_path / "proto.txt"
        p.write_text(good + bad)
        with pytest.raises(DataError, match=rf"proto\.txt:{line}: "):
            read_protocol(p)
    p.write_text("\n\n")
    with pytest.raises(DataError, match="no trials"):
        read_protocol(p)


def test_protocol_excerpts_parse_and_the_2021_trial_list_is_rejected():
    folder = shared_path("data", "asvspoof2019_la_cm_protocols")
    trials = read_protocol(folder / "ASVspoof2019.LA.cm.eval.trl.per_system_first10.txt")
    assert len(trials) == 140
    systems = sorted({t.system for t in trials})
    assert systems == ["-"] + [f"A{i:02d}" for i in range(7, 20)]
    assert all((t.system == "-") == (t.label == 0) for t in trials)
    train = read_protocol(folder / "ASVspoof2019.LA.cm.train.trn.head200.txt")
    assert len(train) == 200 and {t.label for t in train} == {0}
    with pytest.raises(
        DataError, match=r"ASVspoof2021\.LA\.cm\.eval\.trl\.head200\.txt:1: malformed"
    ):
        read_protocol(folder / "ASVspoof2021.LA.cm.eval.trl.head200.txt")


def test_a_bare_audio_folder_path_goes_to_the_speech_source(tmp_path):
    from deepshield.data import resolve

    root = _write_folder(tmp_path / "d", n_per_class=3)
    source, arg = resolve(str(root))
    assert source.prefix == "speech-folder" and arg == str(root)
    (tmp_path / "img" / "real").mkdir(parents=True)
    assert resolve(str(tmp_path / "img"))[0].prefix == "folder"
