"""Black-box explainers: each is a mask generator (:mod:`xfr.explain.masks`) plus an aggregator
on top of :func:`xfr.engine.perturb`, and sees the model only through a score function
``f(images[N,C,H,W]) -> scores[N]`` (:mod:`xfr.score`), or, for the pair methods S-RISE and
X-Maps, through an embedding function ``images -> [N, D]``.

Every explainer returns a ``torch.Tensor`` float32 ``[H, W]`` on the CPU, the input's size;
random ones take ``seed`` (same seed, same map) and all take ``batch_size`` (same map for every
batch size) and ``progress`` (a tqdm bar).

======================  ===================================================================
``occlusion``           sliding square/Gaussian occluder, mean score drop (= captum Occlusion)
``minplus``             MinPlus (Mery 2022, Algorithms 1-4, eqs. 11-13); ``minplus_maps``
                        gives H0-, H1-, H0+, H1+
``avg``                 AVG (Mery & Morris 2022) from the same four maps
``lime``, ``lime_map``  LIME top superpixels; LIME-map (MinPlus footnote 3)
``rise``, ``rise_gauss``  RISE (Petsiuk et al. 2018); RISEgauss (MinPlus §3)
``srise``, ``srise_pair``, ``srise_triplet``  S-RISE (Lu & Ebrahimi §3.2)
``xmaps``               X-Maps methods I-III (Knoche et al. 2023, Algorithm 1, eqs. 4-10)
======================  ===================================================================

White-box explainers (the model's gradients or modules, not imported here: torch-heavy
libraries) have one entry point, :func:`xfr.explain.white_box.white_box_map` (names in
``WHITE_BOX_METHODS``): gradient, gradient x input, SmoothGrad, Integrated Gradients
(:mod:`~xfr.explain.gradients`), guided backpropagation, DeepLIFT, LRP (zennit), Grad-CAM,
Grad-CAM++, ScoreCAM (:mod:`~xfr.explain.cam`), guided Grad-CAM and excitation backprop.
"""
from .lime import LimeExplanation, lime, lime_explain, lime_map
from .minplus import (
                      MinPlusMaps,
                      aggregation_maps,
                      avg,
                      combine_avg,
                      combine_minplus,
                      minplus,
                      minplus_maps,
                      removal_maps,
)
from .occlusion import occlusion
from .rise import rise, rise_gauss
from .srise import SRiseTriplet, srise, srise_pair, srise_triplet
from .xmaps import XMaps, xmaps, xmaps_methods

# name -> explainer taking (f, image, **kwargs) and returning a map (used by the CLI / scripts)
SINGLE_IMAGE_METHODS = {
    "occlusion": occlusion,
    "minplus": minplus,
    "avg": avg,
    "lime": lime,
    "lime-map": lime_map,
    "rise": rise,
    "rise-gauss": rise_gauss,
    "s-rise": srise,
}

__all__ = [
    "occlusion", "minplus", "minplus_maps", "removal_maps", "aggregation_maps", "combine_minplus",
    "combine_avg", "avg", "MinPlusMaps", "lime", "lime_map", "lime_explain", "LimeExplanation",
    "rise", "rise_gauss", "srise", "srise_pair", "srise_triplet", "SRiseTriplet", "xmaps", "xmaps_methods", "XMaps",
    "SINGLE_IMAGE_METHODS",
]
