"""Numbers that cannot mislead (issue 25): balanced accuracy and per-class rates beside accuracy,
collapsed detectors flagged and never ranked above a working one, class-stratified `--n`
subsets, attack statistics over successful examples (CW L2, Square queries), and detector
tables that say which rows are real attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor, nn

from deepshield.attacks.sweep import AttackSpec, attack_sweep
from deepshield.data.splits import TensorSet, stratified_subset
from deepshield.metrics import (
    balanced_accuracy,
    class_rates,
    collapse_note,
    collapsed,
    detector_metrics,
)
from deepshield.metrics.attack_statistics import success_statistics
from deepshield.runs.attack_sweep import AttackData, attack_outcome, sweep_record, table_rows

# -- metrics -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn on one-class draws
@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60),
)
def test_balanced_accuracy_equals_sklearn(pairs):
    y, p = np.array(pairs).T
    assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)


def test_all_real_detector_on_a_75_percent_real_split():
    """The issue's case: 90 reals, 30 fakes, everything called real."""
    y = np.array([0] * 90 + [1] * 30)
    r = class_rates(y, np.zeros(120, dtype=int))
    assert r["accuracy"] == 0.75 and r["balanced_accuracy"] == 0.5
    assert r["fake_passed_as_real"] == 1.0 and r["real_flagged_as_fake"] == 0.0
    assert r["collapsed"] and r["collapsed_to"] == "real"
    assert "COLLAPSED" in collapse_note(r) and "100% of the split real" in collapse_note(r)


def test_class_rates_closed_form():
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0, 1, 0, 0, 1, 0])
    r = class_rates(y, p)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["real_flagged_as_fake"] == pytest.approx(1 / 4)  # FPR on reals
    assert r["fake_passed_as_real"] == pytest.approx(1 / 2)  # FNR on fakes
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert not r["collapsed"] and r["collapsed_to"] is None and collapse_note(r) is None


@pytest.mark.parametrize(("called_real", "expected"), [(19, True), (20, True), (18, False)])
def test_collapse_threshold_is_95_percent(called_real, expected):
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0] * called_real + [1] * (20 - called_real))
    assert collapsed(y, p) is expected


def test_one_class_split_is_not_called_collapsed():
    assert not collapsed([1, 1, 1], [1, 1, 1])
    assert class_rates([1, 1, 1], [1, 1, 1])["real_flagged_as_fake"] is None


def test_detector_metrics_flags_a_fake_collapsed_detector():
    y = np.array([0] * 30 + [1] * 10)
    m = detector_metrics(y, np.linspace(0.6, 0.9, 40))  # every score >= 0.5: all "fake"
    assert m["collapsed"] and m["collapsed_to"] == "fake"
    assert m["accuracy"] == 0.25 and m["balanced_accuracy"] == 0.5
    assert m["auc"] == 1.0  # it ranks perfectly; only its threshold is useless


def test_success_statistics_closed_form():
    correct = [True, True, True, False, True]
    fooled = [True, False, True, True, True]
    l2 = [1.0, 0.0, 3.0, 5.0, 8.0]
    s = success_statistics(correct, fooled, l2, queries=[4, 10, 2, 0, 6])
    assert (s["attacked"], s["successes"]) == (4, 3)  # image 3 was wrong before the attack
    assert s["success_rate"] == 0.75
    assert s["l2_median_success"] == 3.0 and s["l2_mean_success"] == 4.0  # of 1, 3, 8
    assert s["queries_median_success"] == 4.0 and s["queries_mean_success"] == 4.0
    assert s["queries_mean_image"] == pytest.approx(22 / 4)  # images queried at all


def test_success_statistics_without_a_success_is_none_not_zero():
    s = success_statistics([True, True], [False, False], [0.0, 0.0])
    assert s["successes"] == 0 and s["success_rate"] == 0.0
    assert s["l2_median_success"] is None and s["l2_mean_success"] is None


# -- stratified subsets --------------------------------------------------------------------------


def sorted_split(n_real: int = 90, n_fake: int = 30) -> TensorSet:
    """A split stored class by class, reals first (as a real/ fake/ folder lists them)."""
    y = torch.tensor([0] * n_real + [1] * n_fake)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # x = the sample's index
    return TensorSet(x, y)


def test_n_on_a_sorted_split_keeps_both_classes_in_proportion():
    drawn = stratified_subset(sorted_split(), 60, seed=0, classes=["real", "fake"])
    y = drawn.data.y
    assert (int((y == 0).sum()), int((y == 1).sum())) == (45, 15)
    assert (
        drawn.note == "60 of 120 samples (class-stratified random draw, seed 0): 45 real, 15 fake"
    )
    again = stratified_subset(sorted_split(), 60, seed=0)
    assert torch.equal(again.data.x, drawn.data.x)  # seeded
    other = stratified_subset(sorted_split(), 60, seed=1)
    assert not torch.equal(other.data.x, drawn.data.x)
    whole = stratified_subset(sorted_split(), None, seed=0)
    assert len(whole.data) == 120 and "(all)" in whole.note


def test_attack_data_from_a_real_fake_folder_draws_both_classes(tmp_path):
    """The issue's bug: a real/ + fake/ folder's test split lists reals first, so `--n` took
    reals only (AUC, EER and fakes passed came out empty)."""
    from deepshield.config import TrainConfig
    from deepshield.runs.attack_sweep import load_attack_data
    from test_data_folder import _class_folder

    root = _class_folder(tmp_path / "faces", n_real=60, n_fake=20)
    cfg = TrainConfig(dataset=str(root))
    whole = load_attack_data(cfg)
    n_real = int((whole.y == 0).sum())
    assert n_real == 9 and whole.y[:n_real].eq(0).all()  # sorted: the first 9 are all real
    drawn = load_attack_data(cfg, n=8, seed=0)
    assert (int((drawn.y == 0).sum()), int((drawn.y == 1).sum())) == (6, 2)
    assert drawn.subset.startswith("8 of 12 samples (class-stratified random draw, seed 0)")


# -- built models: a working detector and a collapsed one -------------------------------------


class Brightness(nn.Module):
    """Detector by mean brightness: logit margin k * (mean(x) - 0.5); fakes are bright."""

    def __init__(self, k: float = 40.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, x: Tensor) -> Tensor:
        m = self.k * (x.flatten(1).mean(1) - 0.5)  # [B]
        return torch.stack([-m, m], 1) / 2  # [B, 2]


class AlwaysReal(nn.Module):
    """A collapsed detector: calls every input real."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([3.0, -3.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias.expand(len(x), 2) + 0 * x.flatten(1)[:, :1]


def brightness_data(n_real: int = 18, n_fake: int = 6, side: int = 4) -> tuple[Tensor, Tensor]:
    """Reals of mean 0.3..0.45, fakes of mean 0.55..0.7 (uniform images), reals first."""
    levels = torch.cat([torch.linspace(0.3, 0.45, n_real), torch.linspace(0.55, 0.7, n_fake)])
    x = levels[:, None, None, None].expand(-1, 1, side, side).contiguous()
    y = torch.tensor([0] * n_real + [1] * n_fake)
    return x, y


def test_a_collapsed_detector_is_flagged_and_ranked_below_a_working_one():
    from deepshield.defenses.robustness import rank_rows, robustness_table

    x, y = brightness_data()
    models = {"working": Brightness().eval(), "collapsed": AlwaysReal().eval()}
    rows = rank_rows(robustness_table(models, x, y, 0.2, steps=10))
    by = {r["model"]: r for r in rows}
    # plain accuracy would rank the collapsed detector first: 0.75 against the working one's 0
    assert by["collapsed"]["white-box"] == 0.75 > by["working"]["white-box"]
    assert by["collapsed"]["collapsed"] == "real" and by["working"]["collapsed"] is False
    assert by["collapsed"]["clean balanced"] == 0.5 and by["working"]["clean balanced"] == 1.0
    assert by["collapsed"]["white-box fakes passed"] == 1.0
    assert (by["working"]["rank"], by["collapsed"]["rank"]) == (1, 2)


def test_evaluate_flags_a_collapsed_model_and_names_the_fix():
    from deepshield.config import TrainConfig
    from deepshield.runs.evaluation import collapse_warning, evaluate_model

    x, y = brightness_data()
    metrics, _ = evaluate_model(AlwaysReal().eval(), TensorSet(x, y), 2)
    assert metrics["collapsed"] and metrics["balanced_accuracy"] == 0.5
    cfg = TrainConfig(adv_train="pgd", adv_eps=4 / 255)
    line = collapse_warning(metrics, cfg)
    assert "COLLAPSED" in line and "--class-weights balanced" in line and "--eps" in line
    assert collapse_warning(evaluate_model(Brightness().eval(), TensorSet(x, y), 2)[0]) is None


def test_audit_card_fails_a_collapsed_detector_that_no_attack_can_move():
    """A detector that calls everything fake passes no fake at any eps: the old card said
    'pass' for its robustness."""
    from deepshield.audit.budgets import REFERENCE_EPS
    from deepshield.audit.card import score_card

    clean = {"n": 40, "accuracy": 0.25, "balanced_accuracy": 0.5, "auc": 0.95, "eer": 0.1,
             "fake_passed_as_real": 0.0, "real_flagged_as_fake": 1.0, "collapsed": True,
             "collapsed_to": "fake", "predicted_fake_share": 1.0, "command": "c"}  # fmt: skip
    rows = [
        {"eps": e, "fake_passed_as_real": 0.0, "accuracy": 0.25} for e in (0, REFERENCE_EPS["linf"])
    ]
    sweep = {"rows": rows, "command": "a", "n": 40}
    card = {r["item"]: r for r in score_card({"clean": clean, "pgd_linf": sweep})}
    assert card["clean detection"]["status"] == "fail"
    assert "COLLAPSED" in card["clean detection"]["summary"]
    assert card["white-box L-inf"]["status"] == "fail"
    working = {**clean, "collapsed": False, "collapsed_to": None}
    card = {r["item"]: r for r in score_card({"clean": working, "pgd_linf": sweep})}
    assert card["white-box L-inf"]["status"] == "pass"


# -- sweep statistics: CW over successes, Square queries, rows that fool nothing ----------------


def _batch(x: Tensor, y: Tensor) -> AttackData:
    return AttackData(x, y, ["real", "fake"], "toy", "test", "all")


def test_cw_l2_statistics_are_over_successes_and_match_the_closed_form():
    """Brightness detector: the smallest L2 flip of a uniform image at mean m moves every pixel
    by |m - 0.5|, so its L2 norm is |m - 0.5| * sqrt(D)."""
    x, y = brightness_data()
    model = Brightness().eval()
    spec = AttackSpec("cw_l2", (0.0, 0.25, 10.0), steps=100)
    result = attack_sweep(model, x, y, spec, batch_size=24)
    rec = sweep_record(result, spec.checked(), _batch(x, y))
    rows = rec["rows"]
    need = (x.flatten(1).mean(1) - 0.5).abs() * 4  # [N], sqrt(16) = 4
    big = rows[2]
    assert big["attacked"] == 24 and big["successes"] == 24  # CW flips every image at L2 10
    assert big["l2_median_success"] == pytest.approx(float(need.median()), rel=0.15)
    assert big["l2_median_success"] > 0
    mid = rows[1]  # only the images within 0.25 of the boundary
    expected = int((need <= 0.25).sum())
    assert 0 < mid["successes"] < 24 and abs(mid["successes"] - expected) <= 1
    assert mid["l2_median_success"] <= 0.25 and mid["l2_median_success"] > 0
    table = table_rows(rec)
    assert "eps x 255" not in table[0]  # an L2 budget is not in 1/255 steps
    assert [attack_outcome(r) for r in rows] == ["clean", f"yes: {mid['successes']} of 24",
                                                 "yes: 24 of 24"]  # fmt: skip


def test_cw_reproduce_line_keeps_l2_budgets_in_their_units():
    from deepshield.runs.attack_sweep import _command

    spec = AttackSpec("cw_l2", (0.0, 1.0, 100.0)).checked()
    cmd = _command("r", spec, None, "test", None, 8, None, "cw")  # type: ignore[arg-type]
    assert "--eps 0,1.0,100.0 " in cmd and "/255" not in cmd
    spec = AttackSpec("pgd", (0.0, 4 / 255)).checked()
    assert "--eps 0,4/255 " in _command("r", spec, None, "test", None, 8, None, "p")  # type: ignore[arg-type]


def test_square_sweep_reports_the_queries_the_search_spent():
    from deepshield.attacks.square import square_search

    x, y = brightness_data(side=8)
    model = Brightness().eval()
    spec = AttackSpec("square", (0.0, 0.1), steps=50)
    result = attack_sweep(model, x, y, spec, batch_size=24)
    assert result.queries is not None and result.queries.shape == (2, 24)
    assert (result.queries[0] == 0).all()  # eps 0: nothing queried
    direct = square_search(model, x, y, 0.1, queries=50, seed=0).queries
    assert torch.equal(result.queries[1], direct)
    row = sweep_record(result, spec.checked(), _batch(x, y))["rows"][1]
    broke = (result.adv_logits[1].argmax(1) != y) & (result.clean_logits.argmax(1) == y)
    assert row["successes"] == int(broke.sum()) > 0
    assert row["queries_median_success"] == float(direct[broke].float().median())
    assert row["queries_mean_image"] == pytest.approx(float(direct.float().mean()))
    assert (
        "queries/success: median"
        in table_rows(sweep_record(result, spec.checked(), _batch(x, y)))[1]
    )


def test_a_row_whose_attack_fools_nothing_says_so():
    x, y = brightness_data()
    spec = AttackSpec("fgsm", (0.0, 1e-4))
    result = attack_sweep(Brightness().eval(), x, y, spec, batch_size=24)
    row = sweep_record(result, spec.checked(), _batch(x, y))["rows"][1]
    assert row["successes"] == 0 and attack_outcome(row) == "NO: none of 24"
    assert row["l2_median_success"] is None  # not 0.0


def test_detector_rows_count_real_attacks_and_detect_only_successes():
    from deepshield.defenses.adversarial_detector import detection_row, real_attack_note

    # 4 clean images then their attacked versions; the protected model: right on clean 0, 1, 3;
    # the attack breaks image 0 only (image 2 was wrong before it).
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.9, 0.6, 0.8, 0.7])[:, None, None, None]
    x = x.expand(-1, 1, 2, 2).contiguous()
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    fooled = torch.tensor([False, False, True, False, True, False, True, False])
    pairs = TensorSet(x, y, meta={"fooled": fooled})
    row, _ = detection_row(Brightness().eval(), pairs, "fgsm", 0.03)
    assert (row["attacked"], row["successes"]) == (3, 1) and row["real attack"]
    assert row["attack_success"] == pytest.approx(1 / 3)
    assert row["detected_successes"] == 1.0  # image 0's attacked version (0.9) is flagged
    none = TensorSet(x, y, meta={"fooled": torch.tensor([False] * 8)})
    harmless, _ = detection_row(Brightness().eval(), none, "fgsm", 0.1)
    assert not harmless["real attack"] and harmless["detected_successes"] is None
    assert harmless["accuracy"] == 1.0  # perfect "detection" of an attack that fools nothing
    note = real_attack_note([row, harmless])
    assert note.startswith("1 of 2 rows are real attacks") and "fgsm:0.1 fooled no image" in note
