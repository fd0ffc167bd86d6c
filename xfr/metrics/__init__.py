"""Metrics of the five papers: pure functions returning per-image values (and curves).

Every metric declares whether higher is better: :data:`METRICS` / :func:`higher_is_better` by
name, and the attribute ``higher_is_better`` on functions with one main value.

- :func:`deletion`, :func:`insertion`: S-RISE §3.3 decision-flip fractions and Petsiuk AUCs.
- :func:`box_ap`: MinPlus §3.4 AP of the thresholded map against a box.
- :func:`confidence_metrics`: CMS eqs. 9-13, Average Drop %, % Increase, Win %.
- :func:`pointing_game`, :func:`energy_pointing_game`: survey §2.5.
- :func:`cscore`: X-Maps eqs. 1-3, C-Score of verification decisions.
- :func:`stability`: MinPlus Fig. 4, agreement of maps across seeds.
- :func:`randomization_test`, :func:`cascading_randomization`: Adebayo et al. sanity check.
- :func:`map_similarity`: Adebayo et al. data randomization test (true vs shuffled labels).
- :func:`inpainting_score`, :func:`inpainting_triplets`: survey §2.5, Williford et al.'s
  inpainting game.
- :func:`item_response_curves`: survey §6, psychophysics item-response curves after herding.
- :func:`edge_similarity`, :func:`map_coarseness`: survey §2.2, what a map looks like (an edge
  detector? blobs how wide?).
"""
from .base import METRICS, MetricInfo, box_mask, higher_is_better
from .box_ap import BoxAPResult, box_ap
from .confidence import (
    ConfidenceResult,
    average_drop,
    confidence_metrics,
    explanation_scores,
    increase_in_confidence,
    negative_explanation,
    normalize_heatmaps,
    win,
)
from .cscore import (
    CScoreFit,
    CScoreResult,
    best_threshold,
    cosine_distance,
    cscore,
    fit_cscore,
    logistic,
    ratio_histogram,
    stratified_folds,
)
from .data_randomization import MapSimilarity, map_similarity
from .deletion import CurveResult, SaliencyOrderMasks, curve_auc, decision_flip, deletion, insertion, step_counts
from .inpainting import InpaintingScore, InpaintingSet, inpainted_probe, inpainting_score, inpainting_triplets
from .item_response import ItemResponse, item_response_curves
from .pointing import energy_pointing_game, pointing_game, pointing_game_batch
from .randomization import (
    RandomizationResult,
    cascading_randomization,
    map_ssim,
    parameter_layers,
    randomization_test,
)
from .stability import StabilityResult, pearson, spearman, stability
from .structure import edge_similarity, image_edges, map_coarseness

__all__ = [
    "METRICS", "MetricInfo", "higher_is_better", "box_mask",
    "box_ap", "BoxAPResult",
    "confidence_metrics", "ConfidenceResult", "normalize_heatmaps", "negative_explanation",
    "explanation_scores", "average_drop", "increase_in_confidence", "win",
    "cscore", "CScoreResult", "CScoreFit", "fit_cscore", "cosine_distance", "logistic",
    "ratio_histogram", "best_threshold", "stratified_folds",
    "deletion", "insertion", "CurveResult", "SaliencyOrderMasks", "step_counts", "decision_flip",
    "curve_auc",
    "pointing_game", "energy_pointing_game", "pointing_game_batch",
    "randomization_test", "cascading_randomization", "RandomizationResult", "parameter_layers",
    "map_ssim",
    "stability", "StabilityResult", "pearson", "spearman",
    "map_similarity", "MapSimilarity",
    "inpainting_score", "InpaintingScore", "inpainting_triplets", "InpaintingSet", "inpainted_probe",
    "item_response_curves", "ItemResponse",
    "edge_similarity", "image_edges", "map_coarseness",
]
