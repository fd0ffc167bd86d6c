"""xfr.experiments.bias (CMS paper §5.2): group / effect tables on synthetic frames, the adjusted
make-up regression, the nested headline metrics, the gender models' female class and per-group
sampling, and one slow end-to-end check with the real models on real faces (bootstrap CIs:
tests/test_stats.py; the edit and its regions: tests/faces/test_edits.py)."""
import numpy as np
import pandas as pd
import pytest
import torch

from xfr import data, score, stats
from xfr.experiments import bias as B
from xfr.faces import edits as E
from xfr.report import flatten_metrics


# ----------------------------------------------------------------------------- tables
def synthetic_scores(n_f_mk=30, n_f_no=20, n_m_mk=3, n_m_no=25, shift=0.2, seed=0) -> pd.DataFrame:
    """Two 'models'; P(female) = base + shift for faces with make-up."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("a", "b"):
        for gender, mk, n in (("female", True, n_f_mk), ("female", False, n_f_no),
                              ("male", True, n_m_mk), ("male", False, n_m_no)):
            base = 0.7 if gender == "female" else 0.2
            for i in range(n):
                p = float(np.clip(base + (shift if mk else 0.0) + rng.normal(0, 0.05), 0.001, 0.999))
                rows.append(dict(face=f"{gender}{mk}{i}", model=model, gender=gender, makeup=mk,
                                 Heavy_Makeup=mk, Smiling=bool(i % 2), p_female=p,
                                 correct=(p > 0.5) == (gender == "female")))
    return pd.DataFrame(rows)


def test_group_table_groups_and_counts():
    df = synthetic_scores()
    t = B.group_table(df, ["gender", "makeup"], n_boot=200)
    assert len(t) == 8 and set(t.model) == {"a", "b"}
    counts = {(r.model, r.gender, r.makeup): r.n for r in t.itertuples()}
    assert counts[("a", "female", True)] == 30 and counts[("b", "male", True)] == 3
    assert counts[("a", "male", False)] == 25 and counts[("b", "female", False)] == 20
    r = t[(t.model == "a") & (t.gender == "female") & t.makeup].iloc[0]
    x = df[(df.model == "a") & (df.gender == "female") & df.makeup].p_female
    assert r["mean"] == pytest.approx(x.mean()) and r["median"] == pytest.approx(x.median())
    assert r.ci_lo <= r["mean"] <= r.ci_hi
    assert r.accuracy == pytest.approx(df.loc[x.index, "correct"].mean())


def test_makeup_effect_recovers_the_shift():
    df = synthetic_scores(shift=0.2)
    eff = B.makeup_effect(df, n_boot=500)
    f = eff[(eff.model == "a") & (eff.gender == "female")].iloc[0]
    assert f.n_makeup == 30 and f.n_none == 20
    assert f["diff"] == pytest.approx(0.2, abs=0.04)
    assert f.ci_lo < f["diff"] < f.ci_hi and f.ci_lo > 0.1
    assert f.p_mannwhitney < 1e-6
    none = B.makeup_effect(synthetic_scores(shift=0.0), n_boot=200)
    assert none["diff"].abs().max() < 0.05
    # an empty group gives NaN, not an error
    one_sided = df[~(df.makeup & (df.gender == "male"))]
    m = B.makeup_effect(one_sided, n_boot=50)
    assert np.isnan(m[m.gender == "male"]["diff"]).all()


def test_makeup_regression_and_matching_remove_a_confound():
    # P(female) depends on Smiling only; make-up is more frequent among smiling faces, so the
    # unadjusted make-up difference is positive but the adjusted / matched ones are ~0
    rng = np.random.default_rng(0)
    n = 400
    smiling = rng.random(n) < 0.5
    makeup = rng.random(n) < np.where(smiling, 0.8, 0.2)
    p = 1 / (1 + np.exp(-(0.5 + 1.5 * smiling + rng.normal(0, 0.1, n))))
    df = pd.DataFrame(dict(face=range(n), model="a", gender="female", makeup=makeup, Heavy_Makeup=makeup,
                           Smiling=smiling, Young=True, p_female=p))
    reg = B.makeup_regression(df, ["Smiling", "Young"], n_boot=200)
    terms = dict(zip(reg.term, reg.coef))
    assert "Young" not in terms  # constant -> dropped
    assert terms["unadjusted"] > 0.5
    assert abs(terms["Heavy_Makeup"]) < 0.05 and terms["Smiling"] == pytest.approx(1.5, abs=0.05)
    hm = reg[reg.term == "Heavy_Makeup"].iloc[0]
    assert hm.ci_lo < 0 < hm.ci_hi
    assert reg.dropped.iloc[0] == "Young"
    # a covariate identical to Heavy_Makeup is not identifiable: dropped, not split with it
    reg2 = B.makeup_regression(df.assign(Lip=df.Heavy_Makeup), ["Lip", "Smiling"], n_boot=100)
    assert reg2.dropped.iloc[0] == "Lip" and "Lip" not in set(reg2.term)
    assert abs(dict(zip(reg2.term, reg2.coef))["Heavy_Makeup"]) < 0.05
    matched = B.matched_makeup_effect(df, ["Smiling"], n_boot=200).iloc[0]
    assert matched.n_strata == 2 and abs(matched["diff"]) < 0.02


def test_tables_bad_input():
    df = synthetic_scores()
    with pytest.raises(ValueError, match="lacks column"):
        B.group_table(df.drop(columns="gender"), ["gender"])
    with pytest.raises(ValueError, match="empty"):
        B.group_table(df.iloc[:0], ["gender"])
    with pytest.raises(ValueError, match="lacks column"):
        B.makeup_regression(df, ["Wearing_Lipstick"])
    with pytest.raises(ValueError):
        B.matched_makeup_effect(df, [])


def test_female_index_and_sampling():
    assert score.female_index(("female", "male")) == 0 and score.female_index(("man", "woman")) == 1
    with pytest.raises(ValueError):
        score.female_index(("cat", "dog"))
    df = pd.DataFrame(dict(g=["a"] * 5 + ["b"] * 2, v=range(7)))
    s = data.sample_per_group(df, ["g"], 3)
    assert s.g.value_counts().to_dict() == {"a": 3, "b": 2}
    assert data.sample_per_group(df, ["g"], None).equals(df)
    with pytest.raises(ValueError):
        data.sample_per_group(df, ["g"], 0)


def test_headline_metrics_keys():
    df = synthetic_scores()
    groups = B.group_table(df, ["gender", "makeup"], n_boot=50)
    eff = B.makeup_effect(df, n_boot=50)
    nested = B.headline_metrics(groups=groups, effects=eff)
    assert nested["bias"]["celeba"]["a"]["female"]["makeup"]["n"] == 30
    assert "makeup_diff_p" in nested["bias"]["celeba"]["a"]["female"]
    m = flatten_metrics(nested)
    assert m["bias_celeba_a_female_makeup_n"] == 30
    row = groups[(groups.model == "b") & (groups.gender == "male") & ~groups.makeup].iloc[0]
    assert m["bias_celeba_b_male_nomakeup_mean_pfemale"] == pytest.approx(row["mean"])
    assert "bias_celeba_a_female_makeup_diff_p" in m
    assert all(k.startswith("bias_") for k in m)


# ----------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_real_models_on_real_faces(data_dir):
    torch.set_num_threads(1)
    models = score.load_gender_models(["faceres-gender", "mini-xception-gender"])
    cel = data.celeba_table(8, seed=0)
    assert cel.groupby(["gender", "makeup"]).size().to_dict() == {
        ("female", False): 2, ("female", True): 2, ("male", False): 2, ("male", True): 2}
    scores = B.score_table(models, cel)
    assert len(scores) == 16 and scores.p_female.between(0, 1).all()
    assert scores.correct.mean() >= 0.75  # both models are well above chance on CelebA
    regions = E.edit_regions()
    sub = cel.iloc[[0, 4]].reset_index(drop=True)
    meshes, _ = E.face_meshes(sub.path, scale=2)
    assert all(m is not None and m.shape == (468, 2) for m in meshes)
    for path, mesh in zip(sub.path, meshes):
        img = data.load_batch([path])[0]
        masks = E.image_masks(regions, mesh, tuple(img.shape[1:]), supersample=2)
        assert 0.5 < float(masks["eyes"].sum() / masks["control"].sum()) < 2.0
        # the reprojected ring lands on the eyes (lids, lashes): darker than the cheeks
        gray = img.mean(0)
        lum = {k: float((gray * m).sum() / m.sum()) for k, m in masks.items()}
        assert lum["eyes"] < lum["control"]
    edits = B.edit_scores(models, sub, meshes, regions, {"dark": 0.6, "none": 1.0}, base=scores)
    assert len(edits) == 2 * 2 * 2 * 2
    assert edits[edits.edit == "none"].delta.abs().max() < 1e-5  # factor 1 changes nothing
    again = B.edit_scores(models, sub, meshes, regions, {"dark": 0.6})
    pair = edits[edits.edit == "dark"].merge(again, on=["face", "model", "region", "edit"])
    assert np.allclose(pair.p_edited_x, pair.p_edited_y, atol=1e-5)
    assert np.allclose(pair.p_original_x, pair.p_original_y, atol=1e-5)


def synthetic_edits() -> pd.DataFrame:
    """4 faces x 2 regions, edit 'dark': the eye edit moves P(female) by +0.2, the control by 0."""
    p0 = np.array([0.1, 0.4, 0.6, 0.9])
    rows = []
    for i, p in enumerate(p0):
        for region, d in (("eyes", 0.2), ("control", 0.0)):
            rows.append(dict(face=f"f{i}", model="a", gender="male" if i < 2 else "female",
                             region=region, edit="dark", p_original=p, p_edited=min(p + d, 0.99)))
    df = pd.DataFrame(rows)
    df["delta"] = df.p_edited - df.p_original
    df["delta_logit"] = stats.logit(df.p_edited) - stats.logit(df.p_original)
    df["flipped"] = (df.p_edited > 0.5) != (df.p_original > 0.5)
    df["to_female"] = (df.p_edited > 0.5) & (df.p_original <= 0.5)
    df["to_male"] = (df.p_edited <= 0.5) & (df.p_original > 0.5)
    return df


def test_edit_table_and_eye_vs_control_known_answers():
    df = synthetic_edits()
    t = B.edit_table(df, ["gender"], n_boot=200)
    eyes_m = t[(t.region == "eyes") & (t.gender == "male")].iloc[0]
    assert eyes_m.n == 2 and eyes_m.mean_delta == pytest.approx(0.2)
    assert eyes_m.ci_lo == pytest.approx(0.2) and eyes_m.ci_hi == pytest.approx(0.2)
    assert eyes_m.flip_rate == 0.5 and eyes_m.to_female == 0.5 and eyes_m.to_male == 0.0  # 0.4 -> 0.6
    want = np.mean([stats.logit(0.3) - stats.logit(0.1), stats.logit(0.6) - stats.logit(0.4)])
    assert eyes_m.mean_delta_logit == pytest.approx(want)
    ctrl = t[t.region == "control"]
    assert (ctrl.mean_delta == 0).all() and (ctrl.flip_rate == 0).all()
    c = B.eye_vs_control(df, ["gender"], n_boot=200)
    f = c[c.gender == "female"].iloc[0]
    assert f["diff"] == pytest.approx((0.2 + 0.09) / 2) and f.mean_control == 0
    assert c[c.gender == "male"].iloc[0].p_wilcoxon == pytest.approx(0.5)  # exact test, 2 positive pairs
    assert np.isnan(stats.wilcoxon_p([0.0, 0.0, 0.1]))  # fewer than 2 non-zero differences
    with pytest.raises(ValueError, match="both regions"):
        B.eye_vs_control(df[df.region == "eyes"], ["gender"])
    with pytest.raises(ValueError, match="lacks column"):
        B.edit_table(df.drop(columns="flipped"))


def test_pick_examples_excludes_and_skips_missing_meshes():
    table = pd.DataFrame(dict(gender=["f", "f", "m", "m"], Eyeglasses=[True, False, False, False]))
    meshes = [torch.zeros(468, 2), torch.zeros(468, 2), None, torch.zeros(468, 2)]
    assert sorted(B.pick_examples(table, meshes, 1, ["gender"], exclude=["Eyeglasses"])) == [1, 3]
