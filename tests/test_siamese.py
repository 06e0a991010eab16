"""Siamese detectors: the wrapper model, the contrastive loss, the balanced pair sampler and the
Siamese objective inside the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshield import models
from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError, InputError
from deepshield.explain import grad_cam
from deepshield.models import Normalized
from deepshield.models.architectures.siamese import Siamese
from deepshield.train import Trainer
from deepshield.train.siamese import BalancedPairSampler, SiameseObjective, contrastive_loss


# -- contrastive loss ----------------------------------------------------------------------------
def test_contrastive_loss_matches_a_hand_computed_case():
    z1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    z2 = torch.tensor([[3.0, 4.0], [0.3, 0.4], [1.0, 3.0], [0.0, 0.0]])
    same = torch.tensor([True, False, False, True])
    # d = 5, 0.5, 2, 0: same 25/2; different (1 - 0.5)^2 / 2; different beyond margin 0; same 0
    expected = (12.5 + 0.125 + 0.0 + 0.0) / 4
    got = contrastive_loss(z1, z2, same, margin=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # margin 3: the third pair (d = 2) now costs (3 - 2)^2 / 2 and the second (3 - 0.5)^2 / 2
    got3 = contrastive_loss(z1, z2, same, margin=3.0)
    assert got3.item() == pytest.approx((12.5 + 3.125 + 0.5 + 0.0) / 4, rel=1e-6)


def test_contrastive_loss_pulls_same_pairs_and_pushes_different_pairs():
    z1 = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.6, 0.0], [0.6, 0.0]])
    for same, direction in ((True, 1.0), (False, -1.0)):
        loss = contrastive_loss(z1, z2, torch.tensor([same, same]), margin=1.0)
        (g,) = torch.autograd.grad(loss, z1)
        # gradient descent moves z1 towards z2 (+x) for a same pair, away (-x) for a different one
        assert torch.all(torch.sign(-g[:, 0]) == direction)
    zero = contrastive_loss(z1, z1.detach().clone(), torch.tensor([True, False]))
    (g0,) = torch.autograd.grad(zero, z1)
    assert torch.isfinite(g0).all()  # d = 0 keeps a finite gradient


def test_contrastive_loss_refuses_mismatched_shapes():
    with pytest.raises(InputError, match="one same-label flag per pair"):
        contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(2, dtype=torch.bool))


# -- balanced pair sampler -----------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    n0=st.integers(1, 150),
    n1=st.integers(1, 150),
    seed=st.integers(0, 10_000),
    epoch=st.integers(0, 5),
)
def test_pair_sampler_is_balanced_whatever_the_class_imbalance(n0, n1, seed, epoch):
    labels = np.random.default_rng(seed).permutation(np.repeat([0, 1], [n0, n1]))
    sampler = BalancedPairSampler(labels, seed=seed, rank=0, world=1)
    sampler.set_epoch(epoch)
    order = list(sampler)
    n_pairs = (n0 + n1) // 2
    assert len(order) == len(sampler) == 2 * n_pairs
    assert all(0 <= i < n0 + n1 for i in order)
    y = labels[np.asarray(order)].reshape(-1, 2)  # [P, 2] labels of each pair
    same = y[:, 0] == y[:, 1]
    assert same.sum() == n_pairs // 2  # half same-class (floor), half different-class
    same_fake = int(y[same, 0].sum())
    assert abs(same_fake - (n_pairs // 2 - same_fake)) <= 1  # same pairs split over classes
    counts = np.bincount(y.ravel(), minlength=2)
    assert abs(int(counts[0]) - int(counts[1])) <= 2  # each class fills half the samples
    # within a class, samples repeat only once the class is used up
    for c, n_c in ((0, n0), (1, n1)):
        used = np.asarray(order)[y.ravel() == c]
        assert len(np.unique(used)) == min(n_c, len(used))
    sampler.set_epoch(epoch)
    assert list(sampler) == order  # epoch order depends on (seed, epoch) only


def test_pair_sampler_epochs_differ_and_ranks_split_the_pairs():
    labels = np.array([0] * 30 + [1] * 10)
    s = BalancedPairSampler(labels, seed=1, rank=0, world=1)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    ranks = [BalancedPairSampler(labels, seed=1, rank=r, world=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    parts = [np.asarray(list(r)).reshape(-1, 2) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 10
    pairs = np.asarray(first).reshape(-1, 2)
    assert np.array_equal(parts[0], pairs[0::2]) and np.array_equal(parts[1], pairs[1::2])


def test_pair_sampler_needs_two_classes():
    with pytest.raises(DataError, match="at least 2 classes"):
        BalancedPairSampler(np.zeros(10, dtype=np.int64))


# -- the model -----------------------------------------------------------------------------------
def test_siamese_inference_is_head_of_backbone_on_one_input():
    torch.manual_seed(0)
    m = models.create("siamese:simplenet", embed_dim=16, widths=(8, 16)).eval()
    assert isinstance(m, Siamese) and isinstance(m.backbone, Normalized)
    assert m.num_features == 16 and m.cam_layer == "backbone.net.features"
    x = torch.rand(4, 3, 32, 32)
    logits = m(x)
    z = m.backbone(x)  # [4, 16]: normalise, simplenet features, its last Linear
    assert logits.shape == (4, 2) and z.shape == (4, 16)
    torch.testing.assert_close(logits, z @ m.head.weight.T + m.head.bias)
    torch.testing.assert_close(m.forward_features(x), z)
    both, emb = m(x, with_embedding=True)
    torch.testing.assert_close(both, logits)
    torch.testing.assert_close(emb, z)
    # the backbone normalises: pixels shifted by its mean/std change nothing inside
    inner = m.backbone.net.forward_features((x - 0.5) / 0.5)
    torch.testing.assert_close(z, m.backbone.net.fc(inner))


def test_siamese_names_aliases_and_errors():
    assert {"siamese", "siamese:", "mel_siamese"} <= set(models.names())
    assert models.create("siamese").backbone.net.__class__.__name__ == "ResNet"
    mel = models.create("mel_siamese", embed_dim=8, widths=(4, 8))
    assert type(mel.backbone).__name__ == "MelCNN" and mel.frontend_layer == "backbone.frontend"
    assert models.create("siamese:aasist_l", embed_dim=8).frontend_layer == "backbone.first_bn"
    with pytest.raises(ConfigError, match="unknown model"):
        models.create("siamese:nonet")
    with pytest.raises(ConfigError, match="image or audio classifier"):
        models.create("siamese:stargan")
    with pytest.raises(ConfigError, match="margin > 0"):
        models.create("siamese:simplenet", margin=0.0)


def test_siamese_weights_round_trip_through_a_run_folder(tmp_path):
    from deepshield.run import RunDir

    torch.manual_seed(0)
    m = models.create("siamese:simplenet", embed_dim=8, widths=(8, 16), margin=0.5).eval()
    run = RunDir.create(tmp_path / "run")
    run.save_model(m, "best")
    back = run.load_model("best")
    assert isinstance(back, Siamese) and back.margin == 0.5
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(back(x), m(x))


def test_grad_cam_works_on_siamese_image_and_speech_models():
    torch.manual_seed(0)
    img = models.create("siamese:simplenet", embed_dim=8, widths=(8, 16))
    cam = grad_cam(img, torch.rand(2, 3, 32, 32), target=1)
    assert cam.shape == (2, 32, 32) and cam.min() >= 0 and cam.max() <= 1
    mel = models.create("mel_siamese", embed_dim=8, widths=(4, 8))
    x = 0.1 * torch.randn(2, 8000).clamp(-1, 1)
    frames = mel.backbone.frontend(x).shape[1:]  # [n_mels, frames]
    assert grad_cam(mel, x, target=1).shape == (2, *frames)


# -- the objective in the Trainer ----------------------------------------------------------------
def _toy_images(n: int, seed: int, fake_share: float = 0.5) -> TensorSet:
    """Gray noise images; fakes carry a bright 4x4 square at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.1 * torch.rand(n, 3, 16, 16, generator=g)
    y = (torch.rand(n, generator=g) < fake_share).long()
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, 12, (2,), generator=g).tolist()
        x[i, :, r : r + 4, c : c + 4] = 0.95
    return TensorSet(x, y)


def test_siamese_objective_needs_even_batches():
    m = models.create("siamese:simplenet", embed_dim=4, widths=(4,))
    with pytest.raises(InputError, match="even batch size"):
        SiameseObjective()(m, torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 0]))


def test_siamese_objective_is_the_formula_on_consecutive_pairs():
    torch.manual_seed(0)
    m = models.create("siamese:simplenet", embed_dim=4, widths=(4,), margin=0.7).eval()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 0, 1, 0])
    loss, logits = SiameseObjective()(m, x, y)
    z = torch.nn.functional.normalize(m.forward_features(x), dim=1)
    ce = torch.nn.functional.cross_entropy
    expected = (
        contrastive_loss(z[[0, 2]], z[[1, 3]], torch.tensor([True, False]), margin=0.7)
        + ce(logits[[0, 2]], y[[0, 2]])
        + ce(logits[[1, 3]], y[[1, 3]])
    )
    torch.testing.assert_close(loss, expected)


def test_siamese_objective_trains_with_the_trainer_on_imbalanced_toy_data():
    torch.manual_seed(0)
    train = _toy_images(240, seed=1, fake_share=0.25)  # 1 fake : 3 real
    splits = Splits("toy", train, _toy_images(80, seed=2), _toy_images(80, seed=3))
    model = models.create("siamese:simplenet", embed_dim=8, widths=(8, 16), margin=1.0)
    cfg = TrainConfig(model="siamese:simplenet", epochs=4, batch_size=16, lr=3e-3, seed=0)
    trainer = Trainer(
        model,
        cfg,
        objective=SiameseObjective(),
        train_sampler=BalancedPairSampler(train.y, seed=0, rank=0, world=1),
    )
    history = trainer.fit(splits)
    last = history["epochs"][-1]
    assert last["test"]["acc"] >= 0.9
    assert history["epochs"][0]["train"]["loss"] > last["train"]["loss"]
    # the embedding separates the classes: different-class pairs lie further apart
    model.eval()
    with torch.no_grad():
        x, y = splits.test.tensors()
        z = torch.nn.functional.normalize(model.forward_features(x), dim=1)
    d = torch.cdist(z, z)  # [N, N]
    same = y[:, None] == y[None, :]
    assert d[~same].mean() > 2 * d[same].mean()


def test_training_run_picks_the_siamese_objective_and_refuses_odd_batches():
    from deepshield.runs.training import _objective

    labels = torch.tensor([0, 1] * 10)
    splits = Splits("toy", TensorSet(torch.zeros(20, 3, 8, 8), labels), *[None] * 2)
    siamese = models.create("siamese:simplenet", embed_dim=4, widths=(4,))
    objective, sampler = _objective(siamese, splits, TrainConfig(batch_size=8), None)
    assert isinstance(objective, SiameseObjective) and isinstance(sampler, BalancedPairSampler)
    plain = models.create("simplenet", widths=(4,))
    objective, sampler = _objective(plain, splits, TrainConfig(batch_size=8), None)
    assert type(objective).__name__ == "CrossEntropy" and sampler is None
    with pytest.raises(ConfigError, match="even batch"):
        _objective(siamese, splits, TrainConfig(batch_size=7), None)


def test_train_cli_builds_a_siamese_resnet18_image_detector(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from deepshield.cli import app
    from deepshield.run import RunDir

    rng = np.random.default_rng(0)
    for label, shift in (("real", 0), ("fake", 80)):
        (tmp_path / "faces" / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 170, (16, 16, 3)) + shift  # fakes brighter
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "faces" / label / f"{i}.png")
    args = ["train", "-d", str(tmp_path / "faces"), "-m", "siamese:resnet18", "-e", "1"]
    args += ["-b", "6", "--model-arg", "embed_dim=16", "--data-arg", "size=16"]
    args += ["--device", "cpu", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunDir.open(tmp_path / "run")
    assert "contrastive (margin 1)" in (run.path / "sections" / "training.html").read_text()
    model = run.load_model("best")
    assert isinstance(model, Siamese) and model.num_features == 16
    assert model.cam_layer == "backbone." + models.create("resnet18").cam_layer
    assert 0.0 <= run.read_json("metrics.json")["test"]["auc"] <= 1.0
    odd = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "odd"), "-b", "5"])
    assert isinstance(odd.exception, ConfigError) and "even batch" in str(odd.exception)
