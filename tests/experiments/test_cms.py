"""xfr.experiments.cms: the notebook's steps that need no model: per-image confidence tables, the
nested metrics and their flat names, the claim and metric tables."""
import numpy as np
import pandas as pd
import pytest
import torch

from xfr.experiments import cms as C
from xfr.report import flatten_metrics


def test_confidence_table_pools_per_image_results():
    from xfr.metrics import confidence_metrics

    top = np.zeros((8, 8))
    top[:4] = 1
    imgs = [torch.rand(3, 8, 8) for _ in range(3)]
    for im in imgs:
        im[:, :4] += 1.0  # bright top half: darkening it lowers the mean brightness most
    f = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    per_image = [confidence_metrics(f, [im], {"top": [top], "bottom": [1 - top]}) for im in imgs]
    pooled = confidence_metrics(f, imgs, {"top": [top] * 3, "bottom": [1 - top] * 3})
    t = C.confidence_table("t", per_image, {"top": (3, 0.5)}).set_index("method")
    for m, vals in pooled.summary().items():
        for col, v in vals.items():
            assert t.loc[m, col] == pytest.approx(v)
    assert t.loc["top", "win"] == 100 and t.loc["top", "forward_passes"] == 3
    assert np.isnan(t.loc["bottom", "forward_passes"]) and t.loc["top", "n_images"] == 3
    with pytest.raises(ValueError, match="same methods"):
        C.confidence_table("t", [per_image[0], confidence_metrics(f, [imgs[0]], {"x": [top]})], {})


def test_flatten_metrics_joins_nested_keys():
    nested = {"work_size": 224, "faces": {"fer2013": {"input": 4, "no_face": 0}},
              "canvas_coverage": {"12px": 0.5, "strided": {"16px": 0.4}}, "cms": {}}
    assert flatten_metrics(nested) == {"work_size": 224, "faces_fer2013_input": 4, "faces_fer2013_no_face": 0,
                                         "canvas_coverage_12px": 0.5, "canvas_coverage_strided_16px": 0.4}
    with pytest.raises(ValueError, match="twice"):
        flatten_metrics({"a_b": 1, "a": {"b": 2}})


def _cam_table():
    rows = []
    for task in ("cms_expression_fer2013", "cms_verification_lfw"):
        for m, drop, inc, w in (("Grad-CAM", 30.0, 10.0, 20.0), ("Grad-CAM++", 25.0, 5.0, 30.0),
                                ("ScoreCAM", 20.0, 5.0, 10.0), ("CMS", 35.0 if "expr" in task else 10.0, 5.0, 40.0)):
            rows.append(dict(task=task, method=m, forward_passes=1.0, seconds_per_image=0.1, n_images=3,
                             average_drop=drop, increase_in_confidence=inc, win=w))
    return pd.DataFrame(rows)


def test_cam_claims_and_metrics_keep_the_flat_names():
    cam = _cam_table()
    claims = C.cam_claims(cam).set_index("task")
    assert claims.loc["cms_expression_fer2013", "cms_highest_average_drop"]
    assert not claims.loc["cms_verification_lfw", "cms_highest_average_drop"]
    assert claims.cms_lowest_increase.all() and claims.cms_highest_win.all()  # ties count
    cam5 = pd.concat([cam, cam[cam.method == "CMS"].assign(method="CIS (image)")], ignore_index=True)
    flat = flatten_metrics(C.cam_metrics(cam, cam5, claims.reset_index()))
    assert flat["cam_expression_fer2013_gradcampp_average_drop"] == 25.0
    assert flat["cam_verification_lfw_cms_win"] == 40.0
    assert flat["cam_expression_fer2013_cms_highest_average_drop"] == 1
    assert flat["cam_verification_lfw_cms_highest_average_drop"] == 0
    assert flat["cam5_expression_fer2013_cis_image_win"] == 40.0 and "cam5_verification_lfw_cms_average_drop" in flat
    assert C.cam_claims(pd.DataFrame()).empty


def test_section_metrics_flat_names():
    acc = pd.DataFrame([dict(model="mini-xception-gender", data="UTKFace", context=0.3, n=3, accuracy=0.5),
                        dict(model="dlib-resnet", data="LFW pairs", context=0.0, n=2, accuracy=1.0)])
    flat = flatten_metrics({"accuracy": C.accuracy_metrics(acc)})
    assert flat == {"accuracy_mini-xception-gender_utkface_ctx0.3": 0.5, "accuracy_dlib-resnet_lfw_ctx0": 1.0}
    conv = pd.DataFrame({"n_images": [4.0], "n_pearson_0.95": [np.nan]}, index=["verification_lfw"])
    assert flatten_metrics({"convergence": C.convergence_metrics(conv)}) == {
        "convergence_verification_lfw_n_images": 4.0, "convergence_verification_lfw_n_pearson_0.95": None}
    ref = type("R", (), {"patch": 15})()
    pt = pd.DataFrame({"patch": [15, 31], "pearson_with_reference": [1.0, 0.7]})
    assert flatten_metrics(C.patch_metrics(pt, ref)) == {"patch15_pearson_with_patch15": 1.0,
                                                           "patch31_pearson_with_patch15": 0.7}
    rt = pd.DataFrame([dict(depth=0, spearman_face=1.0, ssim=1.0), dict(depth=1, spearman_face=0.2, ssim=0.3)])
    assert flatten_metrics({"randomization": C.randomization_metrics(rt)}) == {
        "randomization_top1_spearman_face": 0.2, "randomization_top1_ssim": 0.3}
    prep = pd.DataFrame([dict(dataset="FER-2013", input=4, kept=3, no_face=1, bad_mesh=0)])
    flat = flatten_metrics(C.face_metrics(prep, [1, 2], [1]))
    assert flat == {"faces_fer2013_input": 4, "faces_fer2013_kept": 3, "faces_fer2013_no_face": 1,
                    "faces_fer2013_bad_mesh": 0, "lfw_pairs_sampled": 2, "lfw_pairs_kept": 1}


def test_coverages_and_methods_table():
    from xfr.explain.canonical import canonical_face
    from xfr.explain.canonical_regions import spread_landmarks

    face = canonical_face(96)
    cov, k = C.coverages(spread_landmarks(117, face), face)
    assert k == 4 and set(flatten_metrics({"canvas_coverage": cov})) == {
        "canvas_coverage_12px", "canvas_coverage_16px", "canvas_coverage_strided_12px", "canvas_coverage_strided_16px"}
    assert cov["16px"] > cov["strided"]["16px"]
    cam = _cam_table()
    t = C.methods_table(cam.iloc[:1], cam.iloc[1:])
    assert len(t) == len(cam) and list(t.columns) == list(cam.columns)
    assert torch.is_tensor(face.face_mask)


def test_image_map_items_covers_the_first_kept_faces_with_a_margin():
    from types import SimpleNamespace

    import pandas as pd

    from xfr.experiments.cms import image_map_items

    rows = pd.DataFrame({"path": [f"/d/{i}.jpg" for i in range(20)]})
    kept = [SimpleNamespace(name=f"{i}.jpg") for i in range(20) if i % 3]  # every third face dropped
    assert image_map_items(rows, kept, 2) == 11  # the 7th kept face (2 + 5 spare) is item 10
    assert image_map_items(rows, kept, 100) == 20
