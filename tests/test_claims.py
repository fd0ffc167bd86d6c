"""The claims table: verdicts from confidence intervals (xfr.stats.verdict, each branch), the
joint ranking bootstrap on synthetic data (A beats B / loses / ties / too few items), the claim
functions on synthetic per-item files (the cms stage's new per-image outputs) and on absent ones,
and xfr.experiments.claims.claims_table on the committed results."""
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from xfr import stats as S
from xfr.assets import REPO_ROOT
from xfr.experiments import claims as C

RESULTS = REPO_ROOT / "results"
BOOT = C.Boot(n_boot=500, level=0.95, seed=0)


# ----------------------------------------------------------------------------- verdict
@pytest.mark.parametrize("lo, hi, direction, threshold, n, n_required, expected", [
    (0.1, 0.3, ">", 0.0, 30, 20, "reproduced"),
    (-0.3, -0.1, ">", 0.0, 30, 20, "not reproduced"),
    (-0.1, 0.3, ">", 0.0, 30, 20, "inconclusive"),
    (0.0, 0.3, ">", 0.0, 30, 20, "inconclusive"),  # touching the threshold is not "entirely on the side"
    (0.2, 0.4, "<", 0.5, 30, 20, "reproduced"),
    (0.6, 0.7, "<", 0.5, 30, 20, "not reproduced"),
    (0.4, 0.6, "<", 0.5, 30, 20, "inconclusive"),
    (math.nan, math.nan, ">", 0.0, 30, 20, "inconclusive"),
    (0.1, 0.3, ">", 0.0, 5, 20, "inconclusive (n too small)"),  # a decisive interval from too few items
    (-0.3, -0.1, ">", 0.0, 5, 20, "inconclusive (n too small)"),
    (0.1, 0.3, ">", 0.0, None, 20, "reproduced"),  # n unknown: no check
    (0.1, 0.3, ">", 0.0, math.nan, 20, "reproduced"),
])
def test_verdict_known_answers(lo, hi, direction, threshold, n, n_required, expected):
    assert S.verdict(lo, hi, direction, threshold, n, n_required) == expected


def test_verdict_bad_input():
    with pytest.raises(ValueError, match="direction"):
        S.verdict(0.0, 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="ci_low"):
        S.verdict(1.0, 0.0, ">", 0.0)


def test_claim_row_has_the_columns_and_its_verdict():
    claim = S.Claim("x", "P", "Fig. 1", "A beats B.", "A - B", ">", 0.0, 10, "f.csv", ours=0.2, ci_low=0.1,
                    ci_high=0.3, n=12)
    row = claim.row()
    assert tuple(row) == S.CLAIM_COLUMNS
    assert row["verdict"] == "reproduced" and row["n"] == 12
    assert math.isnan(S.Claim("y", "P", "", "", "", "<", 1.0, 10, "").row()["n"])


def test_abs_interval():
    assert S.abs_interval(-0.1, 0.3) == (0.0, 0.3)
    assert S.abs_interval(-0.4, -0.1) == (0.1, 0.4)
    assert S.abs_interval(0.2, 0.5) == (0.2, 0.5)
    assert all(math.isnan(v) for v in S.abs_interval(math.nan, 0.1))


# ----------------------------------------------------------------------------- joint bootstrap
def test_ranking_margin_known_answers():
    means = np.array([0.9, 0.7, 0.8])
    assert S.ranking_margin(means, [0], first_only=True) == pytest.approx(0.1)  # 0.9 - best other 0.8
    assert S.ranking_margin(means, [0, 2, 1]) == pytest.approx(0.1)  # gaps 0.1, 0.1
    assert S.ranking_margin(means, [0, 1, 2]) == pytest.approx(-0.1)  # 0.7 < 0.8 breaks the order
    assert S.ranking_margin(means, [1], higher=False, first_only=True) == pytest.approx(0.1)  # lowest
    assert S.ranking_margin(np.stack([means, means[::-1]]), [0], first_only=True).shape == (2,)
    with pytest.raises(ValueError):
        S.ranking_margin(means, [0, 0])
    with pytest.raises(ValueError):
        S.ranking_margin(means, [3])


def test_joint_bootstrap_resamples_items_jointly():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 40)
    x = np.c_[a, a + 1.0]  # paired: the difference is 1 on every item
    diff = S.joint_bootstrap(x, lambda r: r[..., 1].mean(-1) - r[..., 0].mean(-1), n_boot=300, seed=1)
    assert diff == pytest.approx(np.ones(300))
    # the same draws whatever the chunk size; seeded
    small = S.joint_bootstrap(x, lambda r: r[..., 0].mean(-1), n_boot=300, seed=1, chunk=50)
    assert small == pytest.approx(S.joint_bootstrap(x, lambda r: r[..., 0].mean(-1), n_boot=300, seed=1))
    with pytest.raises(ValueError):
        S.joint_bootstrap(np.empty((0, 2)), lambda r: r.mean((-1, -2)))


def _decide(t: S.RankingTest, n_required: int = 10) -> str:
    return S.verdict(t.ci_low, t.ci_high, ">", 0.0, t.n, n_required)


def test_ranking_bootstrap_on_synthetic_methods():
    rng = np.random.default_rng(3)
    item = rng.normal(0.0, 1.0, 30)  # a per-item difficulty shared by the methods (paired data)
    noise = lambda: rng.normal(0.0, 0.05, 30)  # noqa: E731
    a, b, c = item + 0.5 + noise(), item + noise(), item - 0.2 + noise()
    wins = S.ranking_test(np.c_[a, b, c], [0], first_only=True, n_boot=500)
    assert _decide(wins) == "reproduced" and wins.order_fraction == 1.0
    assert wins.margin == pytest.approx(np.mean(a) - np.mean(b))
    loses = S.ranking_test(np.c_[b, a, c], [0], first_only=True, n_boot=500)
    assert _decide(loses) == "not reproduced" and loses.order_fraction == 0.0
    full = S.ranking_test(np.c_[a, b, c], [0, 1, 2], n_boot=500)
    assert _decide(full) == "reproduced"
    ties = S.ranking_test(np.c_[item + noise(), item + noise()], [0], first_only=True, n_boot=500)
    assert _decide(ties) == "inconclusive" and 0.05 < ties.order_fraction < 0.95
    few = S.ranking_test(np.c_[a, b][:5], [0], first_only=True, n_boot=500)
    assert few.ci_low > 0 and _decide(few) == "inconclusive (n too small)"
    lower = S.ranking_test(np.c_[c, a, b], [0], higher=False, first_only=True, n_boot=500)
    assert _decide(lower) == "reproduced"  # lower is better: c has the lowest mean


def test_ranking_test_ignores_nan_items_of_a_column():
    x = np.array([[1.0, 0.0], [np.nan, 0.1], [0.9, 0.0], [1.1, 0.2]] * 5)
    t = S.ranking_test(x, [0], first_only=True, n_boot=200)
    assert np.isfinite([t.margin, t.ci_low, t.ci_high]).all() and t.ci_low > 0


# ----------------------------------------------------------------------------- claims on synthetic files
def _spec(claim_id):
    return next(sp for sp in C.SPECS if sp.claim_id == claim_id)


def _write(root, rel, frame):
    path = root / rel.removeprefix("results/")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _confidence_frame(task, n, cms_drop, other_drop):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        drops = {"CMS": cms_drop + rng.normal(0, 2), "Grad-CAM": other_drop + rng.normal(0, 2),
                 "Grad-CAM++": other_drop - 5 + rng.normal(0, 2), "ScoreCAM": other_drop - 10 + rng.normal(0, 2)}
        best = min(drops, key=lambda m: -drops[m])
        for m, d in drops.items():
            rows.append(dict(task=task, image=f"img{i}", method=m, m_image=1.0, m_explained=1 - d / 100,
                             average_drop=d, increase=0.0 if m == "CMS" else 100.0 * (i % 2), win=100.0 * (m == best)))
    return pd.DataFrame(rows)


def test_cms_confidence_claims_on_a_synthetic_per_image_file(tmp_path):
    task = "cms_expression_fer2013"
    _write(tmp_path, C.CMS_PER_IMAGE, _confidence_frame(task, 30, cms_drop=40.0, other_drop=20.0))
    for metric in ("average_drop", "increase", "win"):
        claim = C.evaluate(_spec(f"{task}_{metric}"), tmp_path, BOOT)
        assert claim.verdict == "reproduced", (metric, claim)
        assert claim.n == 30 and claim.source == "; ".join(_spec(f"{task}_{metric}").sources)
    _write(tmp_path, C.CMS_PER_IMAGE, _confidence_frame(task, 30, cms_drop=5.0, other_drop=40.0))
    assert C.evaluate(_spec(f"{task}_average_drop"), tmp_path, BOOT).verdict == "not reproduced"
    _write(tmp_path, C.CMS_PER_IMAGE, _confidence_frame(task, 4, cms_drop=40.0, other_drop=20.0))
    assert C.evaluate(_spec(f"{task}_average_drop"), tmp_path, BOOT).verdict == "inconclusive (n too small)"
    # another task's rows only: inconclusive, said in source
    absent = C.evaluate(_spec("cms_verification_lfw_win"), tmp_path, BOOT)
    assert absent.verdict == "inconclusive" and "absent" in absent.source and "rerun" in absent.source


def test_cms_claims_without_their_per_image_files_fall_back_to_aggregates(tmp_path):
    _write(tmp_path, C.CMS_METHODS, pd.DataFrame([
        dict(task="cms_verification_lfw", method=m, forward_passes=1, seconds_per_image=0.1, n_images=25,
             average_drop=d, increase_in_confidence=10.0, win=w)
        for m, d, w in (("CMS", 50.0, 70.0), ("Grad-CAM", 5.0, 10.0), ("Grad-CAM++", 3.0, 10.0), ("ScoreCAM", 2.0, 10.0))]))
    claim = C.evaluate(_spec("cms_verification_lfw_average_drop"), tmp_path, BOOT)
    assert claim.ours == pytest.approx(45.0) and claim.n == 25 and math.isnan(claim.ci_low)
    assert claim.verdict == "inconclusive"
    assert f"{C.CMS_PER_IMAGE} absent" in claim.source
    nothing = C.evaluate(_spec("cms_fig8_randomized"), tmp_path, BOOT)
    assert nothing.verdict == "inconclusive" and math.isnan(nothing.ours)


def test_cms_region_and_randomization_claims_on_synthetic_per_image_files(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(25):
        face = 0.02 + rng.normal(0, 0.002)
        rows += [dict(key="verification_lfw", model="dlib-resnet", image=f"p{i}", region="eye_nose_triangle",
                      mean_value=3 * face + rng.normal(0, 0.002)),
                 dict(key="verification_lfw", model="dlib-resnet", image=f"p{i}", region="face", mean_value=face)]
    _write(tmp_path, C.CMS_REGIONS_PER_IMAGE, pd.DataFrame(rows))
    claim = C.evaluate(_spec("cms_regions_verification_lfw"), tmp_path, BOOT)
    assert claim.verdict == "reproduced" and claim.ours == pytest.approx(3.0, rel=0.1) and claim.n == 25
    rand = pd.DataFrame([dict(depth=d, layer=f"l{d}", image=f"f{i}", spearman_face=0.9 / d + rng.normal(0, 0.02))
                         for d in (1, 2, 4) for i in range(20)])
    _write(tmp_path, C.CMS_RANDOMIZATION_PER_IMAGE, rand)
    assert C.evaluate(_spec("cms_fig8_randomized"), tmp_path, BOOT).verdict == "reproduced"  # 0.225 < 0.5
    assert C.evaluate(_spec("cms_fig8_progressive"), tmp_path, BOOT).verdict == "reproduced"  # 0.9 > 0.225


def test_confidence_per_image_matches_confidence_table():
    from xfr.experiments.cms import confidence_per_image, confidence_table
    from xfr.metrics import confidence as conf

    rng = np.random.default_rng(2)
    methods = ["CMS", "Grad-CAM"]
    results = []
    for _ in range(6):
        mi, me = np.array([rng.uniform(0.5, 1)]), rng.uniform(0, 1, (1, 2))
        results.append(conf.ConfidenceResult(methods, mi, me, conf.average_drop(mi, me),
                                             conf.increase_in_confidence(mi, me), conf.win(me), 3))
    per = confidence_per_image("cms_t", results, [f"f{i}" for i in range(6)])
    assert list(per.columns) == ["task", "image", "method", "m_image", "m_explained", "average_drop", "increase", "win"]
    agg = confidence_table("cms_t", results, {}).set_index("method")
    means = per.groupby("method")[["average_drop", "increase", "win"]].mean()
    assert means.loc[methods, "average_drop"].to_numpy() == pytest.approx(agg.loc[methods, "average_drop"].to_numpy())
    assert means.loc[methods, "win"].to_numpy() == pytest.approx(agg.loc[methods, "win"].to_numpy())
    with pytest.raises(ValueError):
        confidence_per_image("cms_t", results, ["only one name"])


def test_region_table_per_image_averages_to_the_cms_regions():
    import torch

    from xfr.experiments.cms import region_table, region_table_per_image
    from xfr.explain.canonical import CISRun, cms
    from xfr.explain.canonical_regions import region_masks

    face = _small_canonical_face()
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(face.size, face.size, generator=gen) for _ in range(5)]
    results = [type("R", (), {"canonical": m})() for m in maps]
    faces = [type("F", (), {"name": f"face{i}"})() for i in range(5)]
    run = CISRun("t", "model", faces, results, np.zeros(5), np.ones(5, bool), 0.0)
    per = region_table_per_image({"k": run}, face)
    assert set(per.image) == {f"face{i}" for i in range(5)}
    assert set(per.region) == set(region_masks(face)) | {"face"}
    agg = region_table({"k": cms(maps)}, {"k": run}, face).set_index("region")
    means = per.groupby("region").mean_value.mean()
    assert means[agg.index].to_numpy() == pytest.approx(agg.mean_value.to_numpy(), rel=1e-5)
    # positive maps: mean(region) / mean(face) is the CMS's enrichment
    assert (means[agg.index] / means["face"]).to_numpy() == pytest.approx(agg.enrichment.to_numpy(), rel=1e-4)


def _small_canonical_face():
    from xfr.explain.canonical import canonical_face

    return canonical_face(48)


# ----------------------------------------------------------------------------- the committed results
@pytest.fixture(scope="module")
def committed():
    return C.claims_table(RESULTS)


def test_claims_table_on_the_committed_results(committed):
    assert tuple(committed.columns) == S.CLAIM_COLUMNS
    assert committed.claim_id.is_unique and len(committed) == len(C.SPECS)
    assert committed.verdict.notna().all() and committed.verdict.isin(S.VERDICTS).all()
    errors = committed[committed.note.str.startswith("error")]
    assert errors.empty, errors[["claim_id", "note"]].to_string()
    assert (committed.direction.isin([">", "<"])).all() and committed.n_required.ge(1).all()
    counts = C.verdict_counts(committed)
    assert counts["total"] == len(committed)
    assert counts["reproduced"] + counts["not_reproduced"] + counts["inconclusive"] == counts["total"]
    # the per-method Table 1 values and the rankings rest on the 20 committed images
    table1 = committed.set_index("claim_id").loc["minplus_table1_first"]
    assert table1.n == 20 and table1.ci_low < table1.ours < table1.ci_high


def test_claims_table_without_results_is_all_inconclusive(tmp_path):
    table = C.claims_table(tmp_path, n_boot=100)
    assert (table.verdict == "inconclusive").all() and not table.note.str.startswith("error").any()
    assert table.source.str.contains("absent").all()


def test_claims_table_is_seeded():
    a = C.claims_table(RESULTS, n_boot=200, seed=1, specs=C.SPECS[:6])
    b = C.claims_table(RESULTS, n_boot=200, seed=1, specs=C.SPECS[:6])
    pd.testing.assert_frame_equal(a, b)


def test_comparison_stage_declares_what_the_claims_read():
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["comparison"]
    deps = set(stage["deps"])
    assert set(C.claim_sources()) <= deps, set(C.claim_sources()) - deps
    outs = {k for o in stage["outs"] for k in (o if isinstance(o, dict) else {o: 0})}
    assert "results/claims.csv" in outs
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["comparison"]
    assert {"n_boot", "level", "seed"} <= set(params)


# ----------------------------------------------------------------------------- S-RISE stage and reliability stage
LITERAL, DEFAULT = ("keep", "raw"), (C.PATCHES_DEFAULT, "centred")


def _key(model, patches, scoring):
    return f"{model.replace('-', '_')}_{patches}_{scoring}"


def test_srise_claims_cover_both_models_and_both_readings():
    from xfr.experiments.verification import PAPER_SRISE_TABLE1

    assert C.PAPER_SRISE_TABLE1 == PAPER_SRISE_TABLE1  # the paper's Table 1 written once more, the same
    assert C.SRISE_READINGS[0] == LITERAL and DEFAULT in C.SRISE_READINGS
    ids = {sp.claim_id for sp in C.SPECS}
    for model in C.SRISE_MODELS:
        for reading in (LITERAL, DEFAULT):
            key = _key(model, *reading)
            assert {f"srise_fig2_sanity_other_masks_{key}", f"srise_fig2_sanity_same_masks_{key}",
                    f"srise_fig5_mask_{key}", f"srise_fig5_sunglasses_{key}",
                    f"srise_table1_deletion_trend_{key}", f"srise_table1_insertion_trend_{key}",
                    f"srise_table1_deletion_500_{key}", f"srise_table1_deletion_1000_{key}",
                    f"srise_table1_beats_random_{key}", f"srise_table1_converged_{key}"} <= ids
    assert "srise_fig2_sanity_other_masks_mobileface_keep_raw" in ids
    assert {f"srise_stable_500_verification_{p}_{s}" for p, s in (LITERAL, DEFAULT)} <= ids
    assert {"minplus_fig4_unstable_lime_expression_500", "minplus_fig4_unstable_rise_expression_500",
            "minplus_fig4_unstable_rise_gauss_expression_500", "minplus_fig4_unstable_lime"} <= ids
    assert "srise_fig3_probe_shallower" in ids


def _sanity_frame(n, rho_other, rho_same, model="mobileface", reading=LITERAL):
    rng = np.random.default_rng(4)
    return pd.DataFrame([dict(model=model, patches=reading[0], scoring=reading[1], pair=i, probe=f"p{i}.jpg",
                              mate=f"m{i}.jpg", rho_randomized_same_masks=rho_same + rng.normal(0, 0.03),
                              rho_randomized_other_masks=rho_other + rng.normal(0, 0.03)) for i in range(n)])


def test_srise_sanity_claims_on_a_synthetic_file(tmp_path):
    key = _key("mobileface", *LITERAL)
    _write(tmp_path, C.SRISE_SANITY, _sanity_frame(12, rho_other=0.1, rho_same=0.7))
    other = C.evaluate(_spec(f"srise_fig2_sanity_other_masks_{key}"), tmp_path, BOOT)
    assert other.verdict == "reproduced" and other.n == 12 and other.ours == pytest.approx(0.1, abs=0.03)
    assert "results/reliability" in other.note and other.source == C.SRISE_SANITY
    same = C.evaluate(_spec(f"srise_fig2_sanity_same_masks_{key}"), tmp_path, BOOT)
    assert same.verdict == "not reproduced"  # the same masks: the maps share the masks' density
    _write(tmp_path, C.SRISE_SANITY, _sanity_frame(5, rho_other=0.1, rho_same=0.7))  # the default run's 5 pairs
    assert C.evaluate(_spec(f"srise_fig2_sanity_other_masks_{key}"), tmp_path, BOOT).verdict == \
        "inconclusive (n too small)"
    # the other reading's rows are absent from the file: inconclusive, said in source
    absent = C.evaluate(_spec(f"srise_fig2_sanity_other_masks_{_key('dlib-resnet', *LITERAL)}"), tmp_path, BOOT)
    assert absent.verdict == "inconclusive" and "no rows" in absent.source


def test_srise_occlusion_claims_on_a_synthetic_file(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for occluder, ratio in (("mask", 0.5), ("sunglasses", 1.4)):
        for i in range(10):
            r = ratio + rng.normal(0, 0.05)
            rows.append(dict(model="dlib-resnet", patches=DEFAULT[0], scoring=DEFAULT[1], pair=i, occluder=occluder,
                             similarity=0.6, saliency_inside=0.3 * r, saliency_outside=0.3, ratio=r,
                             occluded_fraction=0.2))
    _write(tmp_path, C.SRISE_OCCLUSION, pd.DataFrame(rows))
    key = _key("dlib-resnet", *DEFAULT)
    mask = C.evaluate(_spec(f"srise_fig5_mask_{key}"), tmp_path, BOOT)
    assert mask.verdict == "reproduced" and mask.n == 10 and mask.ours == pytest.approx(0.5, abs=0.05)
    assert C.evaluate(_spec(f"srise_fig5_sunglasses_{key}"), tmp_path, BOOT).verdict == "not reproduced"


def _table1_frame(n, model="mobileface", reading=LITERAL, deletion=None, random_deletion=0.5, random_n=None):
    """Per-triplet flip fractions: by default the paper's Table 1 plus noise; random rows (masks 0)
    written under the first reading (patches keep), as the stage does."""
    rng = np.random.default_rng(6)
    deletion = deletion or {k: v[0] for k, v in C.PAPER_SRISE_TABLE1.items()}
    rows = []
    for t in range(n):
        base = dict(model=model, triplet=t, probe=f"p{t}.jpg", mate=f"m{t}.jpg", similarity=0.7, n_forward=1)
        for masks, (_, ins) in C.PAPER_SRISE_TABLE1.items():
            d, i = deletion[masks] + rng.normal(0, 0.02), ins + rng.normal(0, 0.02)
            rows.append(dict(base, patches=reading[0], variant=reading[1], masks=masks, deletion=d,
                             deletion_flipped=True, insertion=i, insertion_flipped=True, deletion_auc=d, insertion_auc=i))
        if t < (n if random_n is None else random_n):
            d = random_deletion + rng.normal(0, 0.02)
            rows.append(dict(base, patches="keep", variant="random", masks=0, deletion=d, deletion_flipped=True,
                             insertion=0.5, insertion_flipped=True, deletion_auc=d, insertion_auc=0.5))
    return pd.DataFrame(rows)


def test_srise_table1_claims_on_a_synthetic_file(tmp_path):
    key = _key("mobileface", *LITERAL)
    _write(tmp_path, C.SRISE_TABLE1, _table1_frame(50))
    for claim_id in (f"srise_table1_deletion_trend_{key}", f"srise_table1_insertion_trend_{key}",
                     f"srise_table1_deletion_500_{key}", f"srise_table1_deletion_1000_{key}",
                     f"srise_table1_insertion_500_{key}", f"srise_table1_beats_random_{key}",
                     f"srise_table1_converged_{key}"):
        claim = C.evaluate(_spec(claim_id), tmp_path, BOOT)
        assert claim.verdict == "reproduced" and claim.n == 50, (claim_id, claim)
    trend = C.evaluate(_spec(f"srise_table1_deletion_trend_{key}"), tmp_path, BOOT)
    assert trend.ours == pytest.approx(0.4466 - 0.2077, abs=0.01) and "10 minus 1000" in trend.note
    beats = C.evaluate(_spec(f"srise_table1_beats_random_{key}"), tmp_path, BOOT)
    assert beats.ours == pytest.approx(0.5 - 0.2077, abs=0.01)
    # flat in the number of masks, far from the paper, no better than chance
    flat = {k: 0.45 for k in C.PAPER_SRISE_TABLE1}
    _write(tmp_path, C.SRISE_TABLE1, _table1_frame(50, deletion=flat, random_deletion=0.6))
    assert C.evaluate(_spec(f"srise_table1_deletion_trend_{key}"), tmp_path, BOOT).verdict == "inconclusive"
    assert C.evaluate(_spec(f"srise_table1_deletion_1000_{key}"), tmp_path, BOOT).verdict == "not reproduced"
    worse = C.evaluate(_spec(f"srise_table1_beats_random_{key}"), tmp_path, BOOT)
    assert worse.verdict == "reproduced" and worse.ours == pytest.approx(0.15, abs=0.01)
    _write(tmp_path, C.SRISE_TABLE1, _table1_frame(50, deletion=flat, random_deletion=0.3))
    assert C.evaluate(_spec(f"srise_table1_beats_random_{key}"), tmp_path, BOOT).verdict == "not reproduced"


def test_srise_table1_claims_match_random_rows_on_model_and_triplet(tmp_path):
    # the default reading's rows under patches PATCHES_DEFAULT, the random rows under "keep" and
    # for the first 30 triplets only: n is the paired count; 20 triplets only: n too small
    frame = pd.concat([_table1_frame(40, reading=DEFAULT, random_n=30),
                       _table1_frame(20, model="dlib-resnet", reading=DEFAULT)], ignore_index=True)
    _write(tmp_path, C.SRISE_TABLE1, frame)
    beats = C.evaluate(_spec(f"srise_table1_beats_random_{_key('mobileface', *DEFAULT)}"), tmp_path, BOOT)
    assert beats.n == 30 and beats.verdict == "inconclusive (n too small)" and beats.ci_low > 0
    trend = C.evaluate(_spec(f"srise_table1_deletion_trend_{_key('dlib-resnet', *DEFAULT)}"), tmp_path, BOOT)
    assert trend.n == 20 and trend.verdict == "inconclusive (n too small)"
    if DEFAULT != LITERAL:  # the literal reading's rows are absent
        absent = C.evaluate(_spec(f"srise_table1_deletion_500_{_key('mobileface', *LITERAL)}"), tmp_path, BOOT)
        assert absent.verdict == "inconclusive" and math.isnan(absent.ours)


def _reliability_frame(rhos, n_faces=12, counts=(50, 100, 200, 500, 1000)):
    """{(task, method, scoring): Spearman at 500 masks} -> curves rising with the mask count."""
    rng = np.random.default_rng(7)
    rows = []
    for (task, method, scoring), rho in rhos.items():
        for i in range(n_faces):
            for n in counts:
                rows.append(dict(task=task, model="m", method=method, scoring=scoring, face=f"f{i}", n_masks=n,
                                 spearman=min(1.0, rho * (n / 500) ** 0.1 + rng.normal(0, 0.01)),
                                 forward_passes=2 * max(counts), seconds=1.0))
    return pd.DataFrame(rows)


def test_reliability_claims_on_a_synthetic_file(tmp_path):
    patches = C.PATCHES_DEFAULT
    _write(tmp_path, C.RELIABILITY, _reliability_frame({
        ("verification", "s-rise keep", "raw"): 0.6, ("verification", f"s-rise {patches}", "centred"): 0.97,
        ("expression", "lime", "centred"): 0.5,  # LIME's map has no scoring: the stage writes its first
        ("expression", "rise", "raw"): 0.7, ("expression", "rise", "centred"): 0.95,
        ("expression", "rise-gauss", "raw"): 0.95}))
    literal = C.evaluate(_spec("srise_stable_500_verification_keep_raw"), tmp_path, BOOT)
    assert literal.verdict == "not reproduced" and literal.n == 12 and literal.ours == pytest.approx(0.6, abs=0.01)
    default = C.evaluate(_spec(f"srise_stable_500_verification_{patches}_centred"), tmp_path, BOOT)
    assert default.verdict == "reproduced" and "500 masks" in default.note
    lime = C.evaluate(_spec("minplus_fig4_unstable_lime_expression_500"), tmp_path, BOOT)
    assert lime.verdict == "reproduced" and "no scoring" in lime.note
    rise = C.evaluate(_spec("minplus_fig4_unstable_rise_expression_500"), tmp_path, BOOT)
    assert rise.verdict == "reproduced" and rise.ours == pytest.approx(0.7, abs=0.01)  # raw, not centred
    assert C.evaluate(_spec("minplus_fig4_unstable_rise_gauss_expression_500"), tmp_path, BOOT).verdict == \
        "not reproduced"
    # 500 masks absent: the largest count below it, said in the note
    _write(tmp_path, C.RELIABILITY, _reliability_frame({("expression", "rise", "raw"): 0.7}, counts=(50, 200, 1000)))
    fallback = C.evaluate(_spec("minplus_fig4_unstable_rise_expression_500"), tmp_path, BOOT)
    assert "200 masks (500 absent)" in fallback.note and fallback.ours < 0.7
    # too few faces
    _write(tmp_path, C.RELIABILITY, _reliability_frame({("expression", "rise", "raw"): 0.7}, n_faces=6))
    assert C.evaluate(_spec("minplus_fig4_unstable_rise_expression_500"), tmp_path, BOOT).verdict == \
        "inconclusive (n too small)"


def test_new_stage_claims_without_their_files_say_which_stage_to_rerun(tmp_path):
    for claim_id, stage in ((f"srise_fig2_sanity_other_masks_{_key('mobileface', *LITERAL)}", "srise"),
                            (f"srise_fig5_mask_{_key('dlib-resnet', *DEFAULT)}", "srise"),
                            (f"srise_table1_beats_random_{_key('dlib-resnet', *LITERAL)}", "srise"),
                            ("srise_stable_500_verification_keep_raw", "reliability"),
                            ("minplus_fig4_unstable_lime_expression_500", "reliability")):
        claim = C.evaluate(_spec(claim_id), tmp_path, BOOT)
        assert claim.verdict == "inconclusive" and math.isnan(claim.ours), claim_id
        assert "absent" in claim.source and f"rerun the {stage} stage" in claim.source, claim.source
