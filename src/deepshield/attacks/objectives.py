"""Attack objectives: per-sample losses of a model output, and the success of an attack.

An objective maps (model output, y) to a loss per sample [B]; the attack core ascends it
(or descends it for targeted attacks). Classifier outputs are logits [B,C] or one logit [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def as_logits(output: Tensor) -> Tensor:
    """Logits [B,C] as they are; one logit [B] or [B,1] -> two-class logits [B,2] = (0, z)."""
    if output.dim() == 2 and output.shape[1] >= 2:
        return output
    z = output.reshape(-1)  # [B]
    return torch.stack([torch.zeros_like(z), z], dim=1)  # [B, 2]


def classification_loss(output: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample [B]: softmax CE for logits [B,C], BCE for one logit [B]/[B,1]."""
    if output.dim() == 2 and output.shape[1] >= 2:
        return F.cross_entropy(output, y, reduction="none")
    z = output.reshape(-1)  # [B]
    return F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction="none")


def margin(output: Tensor, y: Tensor) -> Tensor:
    """Z_y - max_{i != y} Z_i per sample [B]: > 0 when the model predicts y (C&W's f6 core)."""
    logits = as_logits(output)  # [B, C]
    own = logits.gather(1, y[:, None]).squeeze(1)  # [B]
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)  # [B]
    return own - others


def detector_aware_loss(output: Tensor, y: Tensor) -> Tensor:
    """Detector-aware objective on the logits [B, K+1] of a classifier joined with an
    adversarial-example detector (`defenses.adversarial_detector.Guarded`), whose last class is
    "rejected as adversarial": logsumexp_{k<K, k!=y} Z_k - logsumexp(Z_y, Z_K), per sample [B].

    Carlini & Wagner's (2017) attack on a detector treats it as an extra class and asks for a
    wrong class that is not that one: max_{k!=y,K} Z_k - max(Z_y, Z_K). Here the maxima are
    log-sum-exps: with Guarded's log-probabilities this is log P(wrong and passed) -
    log P(y or rejected), whose gradient blends both terms; sign-gradient steps on the hard
    maxima cycle between "fool the classifier" and "hide from the detector" (measured on a toy
    model: 0 % success against 100 % here). Maximise it (pgd's loss_fn); > 0 means more than
    half the joint probability is on wrong, unrejected classes (with one wrong class: success).
    """
    own = output.gather(1, y[:, None]).squeeze(1)  # [B]
    others = output[:, :-1].scatter(1, y[:, None], float("-inf")).logsumexp(1)  # [B], k<K, k!=y
    return others - torch.logaddexp(own, output[:, -1])


def fooled_undetected(output: Tensor, y: Tensor) -> Tensor:
    """Success against a Guarded model (logits [B, K+1]): its class is neither y nor the
    rejection K, i.e. the classifier is fooled and the detector passes the input; [B] bool."""
    pred = output.argmax(1)  # [B]
    return (pred != y) & (pred != output.shape[1] - 1)


def predicts(output: Tensor, y: Tensor) -> Tensor:
    """Whether the model's class is y, per sample [B] bool."""
    return as_logits(output).argmax(1) == y


def misclassified(output: Tensor, y: Tensor) -> Tensor:
    """Success of an untargeted attack on a classifier: class != y, [B] bool."""
    return ~predicts(output, y)
