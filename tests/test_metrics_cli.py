"""`deepshield metrics`: every score format, the orientation both ways, the official numbers
through the command, undefined metrics, and one-line errors (exit 2) from the installed script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk

from conftest import shared_path
from deepshield.cli import main
from deepshield.metrics import cllr, eer, write_pfake_scores, write_scores

SCRIPT = Path(sys.executable).parent / "deepshield"


def run_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> dict:
    monkeypatch.setattr(sys, "argv", ["deepshield", "metrics", *map(str, args), "--json"])
    main()
    return json.loads(capsys.readouterr().out)


def _write(path: Path, header: str | None, rows: list[list[object]], sep: str = "\t") -> Path:
    lines = ([header] if header else []) + [sep.join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def cm_files(
    tmp: Path, keys: list[str], scores: list[float], name: str = "cm"
) -> tuple[Path, Path]:
    """ASVspoof 5 CM score and key files (tab-separated, with the official headers)."""
    ids = [f"T_{i:05d}" for i in range(len(keys))]
    s = _write(
        tmp / f"{name}.tsv",
        "filename\tcm-score",
        [[i, repr(v)] for i, v in zip(ids, scores, strict=True)],
    )
    k = _write(
        tmp / f"{name}_keys.tsv",
        "filename\tcm-label",
        [list(r) for r in zip(ids, keys, strict=True)],
    )
    return s, k


def _official_t1(case: str) -> tuple[dict, list[str], np.ndarray]:
    folder = shared_path("reference", "metrics", "asvspoof5")
    ref = json.loads((folder / f"t1_{case}.json").read_text())
    with open(folder / ref["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    return ref, [r["key"] for r in rows], np.array([float(r["score"]) for r in rows])


@pytest.mark.parametrize("case", ["d_ties", "e_small_imbalanced"])
def test_cm_file_gives_the_official_numbers_both_orientations(tmp_path, monkeypatch, capsys, case):
    ref, keys, scores = _official_t1(case)
    official = ref["results"]["calculate_minDCF_EER_CLLR_actDCF"]
    s, k = cm_files(tmp_path, keys, scores.tolist())
    got = run_json(monkeypatch, capsys, s, "--keys", k)
    assert got["orientation"] == "bonafide-high" and got["undefined"] == {}
    for mine, theirs in (
        ("eer", "eer"),
        ("min_dcf", "minDCF"),
        ("act_dcf", "actDCF"),
        ("cllr", "cllr"),
    ):
        assert abs(got[mine] - official[theirs]) <= 1e-12
    assert abs(got["min_cllr"] - ref["non_official_reference"]["min_cllr_pav"]) <= 1e-12
    spoof = np.array([key == "spoof" for key in keys])
    assert abs(got["auc"] - sk.roc_auc_score(spoof, -scores)) <= 1e-12
    assert abs(got["ap"] - sk.average_precision_score(spoof, -scores)) <= 1e-12
    # the same system written fake-high: equal numbers only when the orientation is stated
    s2, k2 = cm_files(tmp_path, keys, (-scores).tolist(), "flipped")
    flipped = run_json(monkeypatch, capsys, s2, "--keys", k2, "--orientation", "fake-high")
    for key in ("eer", "min_dcf", "act_dcf", "cllr", "min_cllr", "auc", "ap"):
        assert flipped[key] == pytest.approx(got[key], abs=1e-12)
    misread = run_json(monkeypatch, capsys, s2, "--keys", k2)  # default: bonafide-high
    assert misread["auc"] == pytest.approx(1 - got["auc"], abs=1e-12)
    assert misread["eer"] > 0.5


def _sasv(tmp: Path, dash: tuple[int, ...] = ()) -> tuple[Path, Path, dict]:
    folder = shared_path("reference", "metrics", "asvspoof5")
    ref = json.loads((folder / "t2_t2c_small.json").read_text())
    with open(folder / ref["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    scores, keys = [], []
    for i, r in enumerate(rows):
        cols = [r["cm_score"], r["asv_score"], r["sasv_score"]]
        cols = ["-" if c in dash else v for c, v in enumerate(cols)]
        scores.append([f"spk{i % 5}", f"E_{i:04d}", *cols])
        cm_label = "spoof" if r["key"] == "spoof" else "bonafide"
        keys.append([f"spk{i % 5}", f"E_{i:04d}", cm_label, r["key"]])
    s = _write(tmp / "sasv.tsv", "spk\tfilename\tcm-score\tasv-score\tsasv-score", scores)
    k = _write(tmp / "sasv_keys.tsv", "spk\tfilename\tcm-label\tasv-label", keys)
    return s, k, ref["results"]


def test_sasv_file_gives_the_official_track2_numbers(tmp_path, monkeypatch, capsys):
    s, k, ref = _sasv(tmp_path)
    got = run_json(monkeypatch, capsys, s, "--keys", k)
    official = ref["calculate_aDCF_tdcf_tEER"]
    assert abs(got["a_dcf"] - official["a_dcf"]) <= 1e-12
    assert abs(got["min_tdcf"] - official["min_tDCF"]) <= 1e-12
    assert abs(100 * got["t_eer"] - official["t_eer_percent"]) <= 1e-10
    assert {"eer", "min_dcf", "act_dcf", "cllr", "min_cllr", "auc", "ap"} <= set(got)


def test_sasv_without_cm_and_asv_scores_says_what_is_undefined(tmp_path, monkeypatch, capsys):
    s, k, ref = _sasv(tmp_path, dash=(0, 1))
    got = run_json(monkeypatch, capsys, s, "--keys", k)
    assert abs(got["a_dcf"] - ref["calculate_aDCF_tdcf_tEER_sasv_only"]["a_dcf"]) <= 1e-12
    for key in ("eer", "min_dcf", "cllr", "min_tdcf", "t_eer"):
        assert got[key] is None and got["undefined"][key]


def _pfake_data(n: int = 300) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.5).astype(int)
    p = 1 / (1 + np.exp(-(2 * rng.normal(size=n) + 3 * y - 1.5)))
    return y, p, [f"clip_{i}" for i in range(n)]


def test_deepshield_files_2019_and_pfake(tmp_path, monkeypatch, capsys):
    y, p, ids = _pfake_data()
    f2019 = write_scores(tmp_path / "scores.txt", ids, None, y, p)  # holds -P(fake)
    got_2019 = run_json(monkeypatch, capsys, f2019)
    assert got_2019["format"] == "asvspoof2019"
    assert got_2019["eer"] == pytest.approx(eer(y, p)[0], abs=1e-15)
    protocol = _write(
        tmp_path / "protocol.txt",
        None,
        [["spk", i, "-", "-", ("bonafide", "spoof")[v]] for i, v in zip(ids, y, strict=True)],
        " ",
    )
    assert run_json(monkeypatch, capsys, f2019, "--keys", protocol)["eer"] == got_2019["eer"]
    fp = write_pfake_scores(tmp_path / "scores.csv", ids, y, p)
    got = run_json(monkeypatch, capsys, fp)
    assert got["format"] == "deepshield-pfake" and got["orientation"] == "fake-high"
    for key in ("eer", "min_dcf", "auc", "ap", "min_cllr"):
        assert got[key] == pytest.approx(got_2019[key], abs=1e-12)
    # P(fake) read as posterior at prior 1/2: Cllr of its log-odds
    assert got["cllr"] == pytest.approx(cllr(y, np.log(p / (1 - p))), abs=1e-12)


def test_files_saved_by_excel_or_notepad_read_as_the_originals(tmp_path, monkeypatch, capsys):
    """A BOM and CRLF (a P(fake) CSV saved by Excel, a 2019 score file by Notepad): the same
    numbers; the BOM made the P(fake) header 'utt' unreadable."""
    y, p, ids = _pfake_data()
    for plain in (
        write_pfake_scores(tmp_path / "scores.csv", ids, y, p),
        write_scores(tmp_path / "scores.txt", ids, None, y, p),
    ):
        saved = plain.with_name("saved_" + plain.name)
        saved.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))
        assert run_json(monkeypatch, capsys, saved) == run_json(monkeypatch, capsys, plain)


def test_certain_wrong_probability_makes_cllr_undefined(tmp_path, monkeypatch, capsys):
    y, p, ids = _pfake_data(50)
    p[np.flatnonzero(y == 1)[0]] = 0.0  # a fake called real with certainty
    got = run_json(monkeypatch, capsys, write_pfake_scores(tmp_path / "s.csv", ids, y, p))
    assert got["cllr"] is None and "infinite" in got["undefined"]["cllr"]
    assert got["eer"] is not None and got["act_dcf"] is not None


def _official_2021_case(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(bona fide CM scores, spoof CM scores, expected) of a case the official ASVspoof 2021
    evaluation code scored (higher = bona fide)."""
    ref = json.loads(shared_path("reference", "metrics", "asvspoof_cases.json").read_text())
    case = next(c for c in ref["cases"] if c["name"] == name)
    bona, spoof = np.array(case["cm_bonafide_scores"]), np.array(case["cm_spoof_scores"])
    return bona, spoof, case["expected"]


@pytest.mark.parametrize("name", ["ties-rounded", "imbalanced-small"])
def test_2021_utt_score_files_give_the_official_eer_with_either_key_file(
    tmp_path, monkeypatch, capsys, name
):
    """ASVspoof 2021 submissions are 'utt score' lines; the labels come from the 2021 trial
    metadata (bona fide lines say bonafide twice) or a 2019 protocol. Trials in another order
    in the key file than in the score file."""
    bona, spoof, expected = _official_2021_case(name)
    scores = np.r_[bona, spoof]
    ids = [f"LA_E_{i:07d}" for i in range(scores.size)]
    keys = ["bonafide"] * bona.size + ["spoof"] * spoof.size
    s = _write(
        tmp_path / "score.txt",
        None,
        [[i, repr(float(v))] for i, v in zip(ids, scores, strict=True)],
        " ",
    )
    order = np.random.default_rng(0).permutation(len(ids))
    meta = [
        ["LA_0009", ids[i], "alaw", "ita_tx", "bonafide" if keys[i] == "bonafide" else "A07",
         keys[i], "notrim", "eval"]
        for i in order
    ]  # fmt: skip
    protocol = [
        ["LA_0009", ids[i], "-", "-" if keys[i] == "bonafide" else "A07", keys[i]] for i in order
    ]
    for key_rows in (meta, protocol):
        k = _write(tmp_path / "keys.txt", None, key_rows, " ")
        got = run_json(monkeypatch, capsys, s, "--keys", k)
        assert got["format"] == "asvspoof2021" and got["orientation"] == "bonafide-high"
        assert got["eer"] == pytest.approx(expected["eer"], abs=1e-9)
        y = np.r_[np.zeros(bona.size), np.ones(spoof.size)]
        assert got["auc"] == pytest.approx(sk.roc_auc_score(y, -scores), abs=1e-12)


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (command arguments, the message the one-line error must contain)."""
    keys = ["bonafide", "spoof", "spoof", "bonafide"]
    cases: dict[str, tuple[list[str], str]] = {}
    for name, value, pattern in (
        ("nan", "nan", "cm.tsv:3: cm-score 'nan'"),
        ("inf", "inf", "cm.tsv:3: cm-score 'inf'"),
    ):
        s, k = cm_files(tmp / name, keys, [0.3, float(value), 0.2, 0.9])
        cases[name] = ([str(s), "--keys", str(k)], pattern)
    s, k = cm_files(tmp / "single", ["spoof"] * 4, [0.1, 0.2, 0.3, 0.4])
    cases["single class"] = ([str(s), "--keys", str(k)], "all 4 trials are spoof")
    s, k = cm_files(tmp / "constant", keys, [0.5] * 4)
    cases["constant"] = ([str(s), "--keys", str(k)], "every CM score is 0.5")
    s, k = cm_files(tmp / "short", keys, [0.3, 0.1, 0.2, 0.9])
    s.write_text("\n".join(s.read_text().splitlines()[:-1]) + "\n")  # one trial fewer than keys
    cases["mismatched lengths"] = (
        [str(s), "--keys", str(k)],
        "cm_keys.tsv:5: names trial 'T_00003'",
    )
    s, k = cm_files(tmp / "unknown", keys, [0.3, 0.1, 0.2, 0.9])
    k.write_text(k.read_text() + "T_09999\tspoof\n")
    cases["unknown utterance"] = (
        [str(s), "--keys", str(k)],
        "cm_keys.tsv:6: names trial 'T_09999'",
    )
    (tmp / "p").mkdir()
    p = _write(
        tmp / "p" / "s.csv", "utt,label,p_fake", [["a", "real", 0.1], ["b", "fake", 1.3]], ","
    )
    cases["probability outside [0,1]"] = ([str(p)], "s.csv:3: p_fake 1.3 is outside [0, 1]")
    (tmp / "u").mkdir()
    two = _write(tmp / "u" / "score.txt", None, [["a", 0.1], ["b", 0.9]], " ")
    cases["utt score without keys"] = ([str(two)], "score.txt holds 'utt score' lines")
    odd = _write(tmp / "u" / "meta.txt", None, [["s", "a", "x", "y", "bonafide"], ["s", "b"]], " ")
    cases["key line without a key"] = (
        [str(two), "--keys", str(odd)],
        "meta.txt:2: 's b' is not an ASVspoof protocol line",
    )
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "nan",
        "inf",
        "single class",
        "constant",
        "mismatched lengths",
        "unknown utterance",
        "probability outside [0,1]",
        "utt score without keys",
        "key line without a key",
    ],
)
def test_bad_input_is_a_one_line_error_from_the_installed_script(tmp_path, case):
    for sub in ("nan", "inf", "single", "constant", "short", "unknown"):
        (tmp_path / sub).mkdir()
    args, expected = _bad_cases(tmp_path)[case]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [str(SCRIPT), "metrics", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_pfake_file_refuses_bonafide_high(tmp_path, monkeypatch, capsys):
    y, p, ids = _pfake_data(20)
    f = write_pfake_scores(tmp_path / "s.csv", ids, y, p)
    monkeypatch.setattr(
        sys, "argv", ["deepshield", "metrics", str(f), "--orientation", "bonafide-high"]
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "fake-high" in capsys.readouterr().err


def test_text_output_names_undefined_metrics_and_missing_keys(tmp_path, monkeypatch, capsys):
    s, k, _ = _sasv(tmp_path, dash=(0,))
    monkeypatch.setattr(sys, "argv", ["deepshield", "metrics", str(s), "--keys", str(k)])
    main()
    out = capsys.readouterr().out
    assert "a_dcf     0.120308" in out and "eer       undefined (the file has no CM scores" in out
    monkeypatch.setattr(sys, "argv", ["deepshield", "metrics", str(s)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "pass its key file with --keys" in capsys.readouterr().err


def test_a_runs_test_scores_are_a_file_deepshield_metrics_reads(
    tmp_path_factory, monkeypatch, capsys
):
    """Every detector evaluation writes pfake_<split>.csv (the P(fake) shown, one row per sample
    id); scored by `deepshield metrics` it gives the evaluation's own EER and AUC."""
    from test_sweep import trained_tiny_run

    run = trained_tiny_run(tmp_path_factory)
    test = json.loads(run.file("metrics.json").read_text())["test"]
    assert test["score_file"] == {
        "csv": "pfake_test.csv",
        "format": "deepshield P(fake)",
        "calibrated": test["decision"]["calibrated"],
    }
    with open(run.file("pfake_test.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == test["n"] and len({r["utt"] for r in rows}) == len(rows)
    got = run_json(monkeypatch, capsys, run.file("pfake_test.csv"))
    assert got["auc"] == pytest.approx(test["auc"], abs=1e-9)
    assert got["eer"] == pytest.approx(test["eer"], abs=1e-9)
    assert "pfake_test.csv" in run.file("manifest.json").read_text()  # the run owns it


def test_files_saved_with_a_utf8_bom_read_as_without(tmp_path, monkeypatch, capsys):
    """Excel's "CSV UTF-8" and Windows Notepad start a file with a byte-order mark: a P(fake)
    CSV, an ASVspoof 5 CM score file and its key file, an ASVspoof 2019 score file with its
    protocol as keys, each with a BOM (and CRLF lines), score as the plain files do (before, each
    was refused or matched no trial)."""
    y, p, ids = _pfake_data(20)
    keys = ["spoof" if v else "bonafide" for v in y]
    bona = [repr(float(np.log((1 - v) / v))) for v in p]  # bonafide-high
    plain = {
        "pf.csv": "utt,label,p_fake\n"
        + "".join(f"{i},{v},{float(s)!r}\n" for i, v, s in zip(ids, y, p, strict=True)),
        "cm.tsv": "filename\tcm-score\n"
        + "".join(f"{i}\t{s}\n" for i, s in zip(ids, bona, strict=True)),
        "cm_keys.tsv": "filename\tcm-label\n"
        + "".join(f"{i}\t{k}\n" for i, k in zip(ids, keys, strict=True)),
        "s19.txt": "".join(f"{i} - {k} {s}\n" for i, k, s in zip(ids, keys, bona, strict=True)),
        "proto.txt": "".join(f"SPK {i} - - {k}\n" for i, k in zip(ids, keys, strict=True)),
    }
    for name, text in plain.items():
        (tmp_path / name).write_text(text, newline="")
        (tmp_path / f"bom_{name}").write_text("\ufeff" + text.replace("\n", "\r\n"), newline="")

    def metrics(scores: str, keys: str | None = None) -> dict:
        args = [tmp_path / scores] + (["--keys", tmp_path / keys] if keys else [])
        return run_json(monkeypatch, capsys, *args)

    for names in (("pf.csv",), ("cm.tsv", "cm_keys.tsv"), ("s19.txt", "proto.txt")):
        want = metrics(*names)
        assert want["n_spoof"] == int(sum(y)) and want["eer"] == pytest.approx(eer(y, p)[0])
        assert metrics(*(f"bom_{n}" for n in names)) == want
