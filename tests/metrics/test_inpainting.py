"""Inpainting game (survey §2.5, Williford et al.): score known answers and sklearn agreement,
the inpainted probe, the decision-change filter on a toy embedder, errors, one real-data run."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from xfr.faces.occluders import cut_and_paste
from xfr.metrics import METRICS, higher_is_better, inpainted_probe, inpainting_score, inpainting_triplets
from xfr.metrics.inpainting import average_precision, roc_auc


def region(h=12, w=10):
    r = np.zeros((h, w), bool)
    r[3:7, 2:6] = True
    return r


def test_score_known_answers():
    r = region()
    share = r.mean()
    res = inpainting_score(r.astype(float), r)
    assert res.auc[0] == 1.0 and res.ap[0] == 1.0
    res = inpainting_score(~r, r)
    assert res.auc[0] == 0.0
    res = inpainting_score(np.full(r.shape, 3.0), r)
    assert res.auc[0] == 0.5 and res.ap[0] == pytest.approx(share)
    # sign=-1: a map whose high values SUPPORT the mate similarity (RISE-like) is read negated
    assert inpainting_score(-r.astype(float), r, sign=-1).auc[0] == 1.0
    assert higher_is_better("inpainting_auc") and higher_is_better("inpainting_ap")
    assert inpainting_score.higher_is_better and METRICS["inpainting_ap"].field == "ap"


def test_score_matches_sklearn_and_batches():
    rng = np.random.default_rng(0)
    maps = np.round(rng.normal(size=(5, 12, 10)), 1)  # ties included
    masks = rng.random((5, 12, 10)) < 0.3
    res = inpainting_score(torch.from_numpy(maps), torch.from_numpy(masks))
    for k in range(5):
        assert res.auc[k] == pytest.approx(roc_auc_score(masks[k].ravel(), maps[k].ravel()), abs=1e-12)
        assert res.ap[k] == pytest.approx(average_precision_score(masks[k].ravel(), maps[k].ravel()), abs=1e-12)
    assert np.isnan(roc_auc(np.arange(4.0), np.zeros(4, bool)))
    assert np.isnan(average_precision(np.arange(4.0), np.zeros(4, bool)))
    empty = inpainting_score(maps[0], np.zeros((12, 10), bool))
    assert np.isnan(empty.auc[0]) and np.isnan(empty.ap[0])


def test_score_errors():
    r = region()
    with pytest.raises(ValueError, match="2 maps but 1 region"):
        inpainting_score(np.zeros((2, 12, 10)), r[None])
    with pytest.raises(ValueError, match="shape"):
        inpainting_score(np.zeros((12, 11)), r)
    with pytest.raises(ValueError, match="sign must be"):
        inpainting_score(r, r, sign=2)
    with pytest.raises(ValueError, match="NaN"):
        inpainting_score(np.full((12, 10), np.nan), r)


def test_inpainted_probe():
    g = torch.Generator().manual_seed(0)
    p, n = torch.rand(3, 12, 10, generator=g), torch.rand(3, 12, 10, generator=g)
    r = torch.from_numpy(region())
    hard = inpainted_probe(p, n, r, feather=0)
    assert torch.equal(hard, cut_and_paste(p, n, r.float()))
    assert torch.equal(hard[:, r], n[:, r]) and torch.equal(hard[:, ~r], p[:, ~r])
    soft = inpainted_probe(p, n, r, feather=1.0)
    far = torch.zeros(12, 10, dtype=torch.bool)
    far[10:, :] = True  # > 3 sigma from the region
    assert torch.allclose(soft[:, far], p[:, far]) and not torch.equal(soft, hard)
    with pytest.raises(ValueError, match="differ in shape"):
        inpainted_probe(p, n[:, :8], r)
    with pytest.raises(ValueError, match="region_mask must be"):
        inpainted_probe(p, n, r[:8])
    with pytest.raises(ValueError, match="feather"):
        inpainted_probe(p, n, r, feather=-1)


def quadrant_embed(x):
    """Toy embedder: the grey means of the 4 quadrants."""
    return torch.nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1)


def toy_triplets():
    probe = torch.full((1, 3, 8, 8), 0.5)
    nonmate = torch.zeros(1, 3, 8, 8)
    nonmate[:, :, :4, :4] = 1.0  # embedding (1, 0, 0, 0)
    quad = {name: torch.zeros(1, 8, 8, dtype=torch.bool) for name in ("tl", "br")}
    quad["tl"][:, :4, :4] = True
    quad["br"][:, 4:, 4:] = True
    return probe, probe.clone(), nonmate, quad


def test_triplets_keep_decision_changes():
    probe, mate, nonmate, quad = toy_triplets()
    s = inpainting_triplets(quadrant_embed, probe, mate, nonmate, quad, tau=0.9, feather=0, batch_size=1)
    t = s.table.set_index("region")
    # tl -> (1, .5, .5, .5): cos 1.25 / sqrt(1.75) = 0.945 stays above tau; br -> (.5, .5, .5, 0): 0.866
    assert t.loc["tl", "s_inpainted_mate"] == pytest.approx(1.25 / np.sqrt(1.75), abs=1e-6)
    assert t.loc["br", "s_inpainted_mate"] == pytest.approx(0.75 / np.sqrt(0.75), abs=1e-6)
    assert t.loc["tl", "s_probe_mate"] == pytest.approx(1.0)
    assert list(s.kept) == [False, True] and list(s.kept_items()) == [1]
    assert s.n_forward == 3 + 2 and s.masks.shape == (2, 8, 8) and t.loc["tl", "area"] == 16
    c = inpainting_triplets(quadrant_embed, probe, mate, nonmate, quad, tau=0.9, feather=0, criterion="closer")
    expected = (c.s_probe_mate >= 0.9) & (c.s_inpainted_nonmate > c.s_probe_nonmate) & (
        c.s_inpainted_nonmate > c.s_inpainted_mate)
    assert np.array_equal(c.kept, expected) and not c.kept.any()


def test_triplets_errors():
    probe, mate, nonmate, quad = toy_triplets()
    with pytest.raises(ValueError, match="criterion must be one of"):
        inpainting_triplets(quadrant_embed, probe, mate, nonmate, quad, tau=0.9, criterion="nope")
    with pytest.raises(ValueError, match=r"region_masks\['tl'\] must be a Tensor \[N,H,W\]"):
        inpainting_triplets(quadrant_embed, probe, mate, nonmate, {"tl": quad["tl"][0]}, tau=0.9)
    with pytest.raises(ValueError, match="probes must be a Tensor"):
        inpainting_triplets(quadrant_embed, probe[0], mate, nonmate, quad, tau=0.9)
    with pytest.raises(ValueError, match="tau must be"):
        inpainting_triplets(quadrant_embed, probe, mate, nonmate, quad, tau=float("nan"))
    with pytest.raises(ValueError, match="embed_fn must map"):
        inpainting_triplets(lambda x: x.mean((1, 2, 3)), probe, mate, nonmate, quad, tau=0.9)


@pytest.mark.slow
def test_inpainting_on_lfw_with_dlib(data_dir):
    from xfr import models
    from xfr.data import lfw_pairs
    from xfr.experiments.lfw_regions import lfw_region_triplets
    from xfr.models.detect import MTCNNDetector
    from xfr.score import unit_embeddings

    faces = lfw_region_triplets(lfw_pairs(), MTCNNDetector(min_face_size=50).eval(), n=3, size=150)
    assert faces.probes.shape == (3, 3, 150, 150) and set(faces.region_masks) == {"eyes", "eyebrows", "nose", "mouth"}
    for r, m in faces.region_masks.items():
        area = m.flatten(1).float().mean(1)
        assert ((area > 0.002) & (area < 0.2)).all(), (r, area)
    s = inpainting_triplets(unit_embeddings(models.load("dlib-resnet")), faces.probes, faces.mates,
                            faces.nonmates, faces.region_masks, tau=0.9, feather=0)
    assert len(s.kept) == 12 and s.n_forward == 9 + 12
    assert (s.s_probe_mate > s.s_probe_nonmate).all()  # real mates are closer than non-mates
    for k in range(12):  # the inpainted probe differs from the probe only inside its region
        diff = (s.inpainted[k] - faces.probes[s.triplet[k]]).abs().sum(0) > 0
        assert not (diff & ~s.masks[k]).any()
