"""Testing with Concept Activation Vectors (survey ``002_…`` §5, Figs. 15-16; Kim et al.,
*Interpretability Beyond Feature Attribution: TCAV*, ICML 2018).

A concept C is a set of images that show it (e.g. CelebA faces with ``Heavy_Makeup``); a CAV is
the normal of a linear classifier separating the activations of C's images at a layer from
those of a random image set (``v_C``, pointing towards C). The TCAV score of C for class k is the
fraction of class-k images whose logit grows along ``v_C``:

``TCAV_{C,k,l} = |{x in X_k : grad_{h_l} logit_k(x) . v_C > 0}| / |X_k|``

Statistical test (Kim et al. §3.2): the CAV is trained against each of ``R`` random sets, giving
``R`` scores; the same is done with a random set in place of the concept (random vs random),
and a two-sided t-test compares the two lists of scores. A concept is significant when
``p < alpha`` (Bonferroni-corrected over the concepts tested together, as the paper does) and its
mean score differs from the random one; a random "concept" gives p > alpha. The classifier is a
linear SVM (hinge loss, as TCAV's default SGD classifier) solved exactly in its dual
(:func:`concept_activation_vector`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .layers import as_unit_batch, input_gradients_only, tapped


@dataclass
class CAV:
    vector: np.ndarray  # [D] unit normal, pointing towards the concept
    accuracy: float  # held-out accuracy of the linear classifier (1/3 of each set)


@dataclass
class TCAVResult:
    concept: str
    scores: np.ndarray  # [R] TCAV score against each random set
    random_scores: np.ndarray  # [R] random vs random
    cav_accuracy: float  # mean held-out accuracy of the concept's CAVs
    p_value: float  # two-sided t-test, scores vs random_scores
    alpha: float  # the significance level after Bonferroni correction

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    def row(self) -> dict:
        return dict(concept=self.concept, tcav=self.score,
                    tcav_sd=float(np.std(self.scores, ddof=1)) if len(self.scores) > 1 else 0.0,
                    random_tcav=float(np.mean(self.random_scores)), cav_accuracy=self.cav_accuracy,
                    p_value=self.p_value, alpha=self.alpha, significant=self.significant, n_random=len(self.scores),
                    scores=" ".join(f"{v:.6g}" for v in self.scores),
                    random_scores=" ".join(f"{v:.6g}" for v in self.random_scores))


def layer_acts_and_grads(model: nn.Module, layer: str, images: Tensor, target: Callable[[Tensor], Tensor] | None = None,
                         batch_size: int = 32) -> tuple[Tensor, Tensor | None]:
    """Flattened activations of ``layer`` [N,D] and, with ``target`` (model output [N,K] ->
    [N], e.g. ``lambda out: out[:, k]``), the gradients of the target with respect to them [N,D]."""
    x_all = as_unit_batch(images)
    acts_out, grads_out = [], []
    with input_gradients_only(model):
        for lo in range(0, len(x_all), batch_size):
            box: list[Tensor] = []

            def keep(t: Tensor, box: list[Tensor] = box) -> Tensor:
                leaf = t.detach().requires_grad_(target is not None)  # the layer as a leaf: d target / d h
                box.append(leaf)
                return leaf

            with tapped(model, layer, keep), torch.set_grad_enabled(target is not None):
                out = model(x_all[lo:lo + batch_size])
                if target is not None:
                    target(out).sum().backward()
            acts_out.append(box[0].detach().flatten(1))
            if target is not None:
                grad = box[0].grad
                assert grad is not None  # the leaf of keep() requires grad
                grads_out.append(grad.detach().flatten(1))
    acts = torch.cat(acts_out).float()
    return acts, (torch.cat(grads_out).float() if target is not None else None)


def layer_acts_many(model: nn.Module, layers: Sequence[str], images: Tensor, batch_size: int = 32) -> dict[str, Tensor]:
    """Flattened activations [N,D] of several layers from one forward pass per batch."""
    from contextlib import ExitStack

    x_all = as_unit_batch(images)
    out: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    with input_gradients_only(model), torch.no_grad():
        for lo in range(0, len(x_all), batch_size):
            with ExitStack() as stack:
                for layer in layers:
                    def keep(t: Tensor, layer: str = layer) -> None:
                        out[layer].append(t.flatten(1))

                    stack.enter_context(tapped(model, layer, keep))
                model(x_all[lo:lo + batch_size])
    return {layer: torch.cat(v).float() for layer, v in out.items()}


def concept_activation_vector(concept: Tensor | np.ndarray, random: Tensor | np.ndarray, seed: int = 0,
                              c: float = 1.0) -> CAV:
    """The CAV of ``concept`` [Nc,D] against ``random`` [Nr,D] activations: a linear SVM (hinge
    loss, the loss of TCAV's default SGD classifier) fitted on 2/3 of each set, its accuracy on
    the rest; the unit normal pointing towards the concept.

    The SVM is solved exactly in its dual on the Gram matrix of the training activations
    (scikit-learn's ``SVC(kernel="precomputed")``; ``w = sum_i y_i alpha_i x_i``): with tens
    of images and 10^4-10^5 activation dimensions this takes milliseconds, where the primal SGD
    took seconds per CAV (and hundreds of CAVs are fitted per layer)."""
    from sklearn.svm import SVC

    cc, r = np.asarray(concept, np.float32), np.asarray(random, np.float32)
    if len(cc) < 3 or len(r) < 3:
        raise ValueError(f"a CAV needs >= 3 images per set, got {len(cc)} concept and {len(r)} random")
    rng = np.random.default_rng(seed)
    ci, ri = rng.permutation(len(cc)), rng.permutation(len(r))
    nc, nr = max(2, (2 * len(cc)) // 3), max(2, (2 * len(r)) // 3)
    x_train = np.concatenate([cc[ci[:nc]], r[ri[:nr]]])
    y_train = np.r_[np.ones(nc), np.zeros(nr)]
    x_test = np.concatenate([cc[ci[nc:]], r[ri[nr:]]])
    y_test = np.r_[np.ones(len(cc) - nc), np.zeros(len(r) - nr)]
    scale = np.abs(x_train).mean() or 1.0
    x_train, x_test = x_train / scale, x_test / scale
    clf = SVC(kernel="precomputed", C=c).fit((x_train @ x_train.T).astype(np.float64), y_train)
    v = (clf.dual_coef_[0] @ x_train[clf.support_].astype(np.float64))  # positive side: classes_[1] = the concept
    norm = np.linalg.norm(v)
    acc = float((clf.predict((x_test @ x_train.T).astype(np.float64)) == y_test).mean()) if len(y_test) else float("nan")
    return CAV(v / norm if norm > 0 else v, acc)


def tcav_score(grads: Tensor | np.ndarray, cav: CAV) -> float:
    """Fraction of the class images whose target grows along the CAV (directional derivative > 0)."""
    g = np.asarray(grads, np.float64)
    return float(((g @ cav.vector) > 0).mean())


def tcav(class_grads: Tensor, concept_acts: Mapping[str, Tensor], random_acts: Sequence[Tensor], seed: int = 0,
         alpha: float = 0.05, bonferroni: bool = True) -> list[TCAVResult]:
    """TCAV of every concept (name -> activations [Nc,D]) for the class whose target gradients
    at the layer are ``class_grads`` [Nk,D], against the ``R`` random sets ``random_acts``
    (each [Nr,D]); the random baseline trains random set i against random set i+1 (mod R).
    ``alpha`` is divided by the number of concepts with ``bonferroni``."""
    from scipy import stats

    if len(random_acts) < 2:
        raise ValueError(f"the statistical test needs >= 2 random sets, got {len(random_acts)}")
    R = len(random_acts)
    baseline = np.array([tcav_score(class_grads, concept_activation_vector(random_acts[i], random_acts[(i + 1) % R],
                                                                            seed + i)) for i in range(R)])
    level = alpha / max(len(concept_acts), 1) if bonferroni else alpha
    out = []
    for name, acts in concept_acts.items():
        cavs = [concept_activation_vector(acts, random_acts[i], seed + i) for i in range(R)]
        scores = np.array([tcav_score(class_grads, c) for c in cavs])
        if np.allclose(scores, scores[0]) and np.allclose(baseline, scores[0]):
            p = 1.0
        else:
            p = float(stats.ttest_ind(scores, baseline, equal_var=False).pvalue)
            p = 1.0 if not np.isfinite(p) else p
        out.append(TCAVResult(name, scores, baseline, float(np.mean([c.accuracy for c in cavs])), p, level))
    return out
