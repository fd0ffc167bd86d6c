"""The survey stage's glue (xfr.experiments.survey): statements, leaderboard, pass counting,
the inpainting item choice; known answers on synthetic tables and a tiny model."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xfr.experiments import survey as SV
from xfr.experiments.survey_statements import STATEMENTS, statement_differences, statements


def _per_face(edge_inside: float, edge_outside: float, n_faces: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    methods = ["rise", "gradient", "integrated-gradients", "guided-backprop", "deeplift", "grad-cam"]
    for k in range(n_faces):
        for m in methods:
            inside = m in STATEMENTS["edge_detectors"][0]
            rows.append(dict(task="expression" if k % 2 else "gender", face=f"f{k}", model="m", method=m,
                             family=SV.FAMILY[m],
                             edge_similarity=(edge_inside if inside else edge_outside) + 0.01 * rng.standard_normal(),
                             map_coarseness=0.2 if m == "grad-cam" else 0.02, deletion_auc=0.1 * (1 + methods.index(m)),
                             rand_all_dependence=0.5, seconds=1.0, forward_passes=1, backward_passes=1))
    return pd.DataFrame(rows)


def test_statement_difference_is_the_paired_mean_gap():
    per = _per_face(0.5, 0.1)
    d = statement_differences(per, "edge_detectors")
    assert len(d) == 12
    assert d.mean() == pytest.approx(0.4, abs=0.02)


def test_statements_hold_only_on_the_stated_side():
    table = statements(_per_face(0.5, 0.1), n_boot=200).set_index("statement")
    assert table.loc["edge_detectors", "holds"]
    assert table.loc["cam_coarse", "holds"]  # grad-cam 0.2 vs 0.02
    assert not table.loc["gradient_randomization", "holds"]  # all 0.5: a zero difference
    flipped = statements(_per_face(0.1, 0.5), n_boot=200).set_index("statement")
    assert not flipped.loc["edge_detectors", "holds"]
    assert flipped.loc["edge_detectors", "ci_high"] < 0


def test_leaderboard_means_and_ranks_per_task():
    board = SV.leaderboard(_per_face(0.5, 0.1))
    assert set(board.task) == {"expression", "gender"}
    expr = board[board.task == "expression"].set_index("method")
    assert expr.loc["rise", "rank_deletion"] == 1  # lowest deletion AUC
    assert expr.loc["grad-cam", "rank_deletion"] == 6
    assert (expr.n_faces == 6).all()
    rows = SV.methods_rows(board)
    assert {"task", "method", "forward_passes", "seconds_per_image"} <= set(rows.columns)
    assert rows.task.str.startswith("survey_").all()


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        self.classes = ("a", "b")

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_explain_counts_forward_and_backward_passes():
    torch.manual_seed(0)
    model = _Tiny().eval()
    face = SV.SurveyFace("expression", "x", "tiny", torch.rand(3, 16, 16), 1, "b")
    grad = SV.explain("gradient", model, face, {})
    assert grad.map.shape == (16, 16) and grad.map.dtype == np.float32
    assert grad.forward >= 1 and grad.backward == 1
    occ = SV.explain("occlusion", model, face, {"occlusion": {"patch": 8, "stride": 8}})
    assert occ.backward == 0 and occ.forward >= 4
    sg = SV.explain("smoothgrad", model, face, {"smoothgrad": {"n_samples": 3}}, seed=0)
    assert sg.backward == 3
    assert np.array_equal(sg.map, SV.explain("smoothgrad", model, face, {"smoothgrad": {"n_samples": 3}}, seed=0).map)


def test_explain_face_scores_every_method_with_the_randomized_model():
    torch.manual_seed(0)
    model = _Tiny().eval()
    face = SV.SurveyFace("expression", "x", "tiny", torch.rand(3, 16, 16), 1, "b")
    res = SV.explain_face(model, face, ["gradient", "rise"], {"rise": {"n_masks": 8}}, random_depths=[-1])
    assert set(res.runs) == {"gradient", "rise"} and "rise" in res.other_seed
    rows = SV.score_face(model, res, step=0.25)
    assert {r["method"] for r in rows} == {"gradient", "rise"}
    for r in rows:
        assert -1 <= r["rand_all_spearman_abs"] <= 1
        assert r["rand_all_dependence"] == abs(r["rand_all_spearman_abs"])
        assert 0 <= r["deletion_auc"] <= 1
    assert "seed_spearman" in [k for r in rows for k in r]


class _Set:
    def __init__(self, regions, kept):
        self.region = np.array(regions)
        self.kept = np.array(kept)

    def kept_items(self):
        return np.flatnonzero(self.kept)


def test_inpainting_items_take_the_regions_in_turn():
    inset = _Set(["eyes", "eyes", "nose", "nose", "mouth"], [True, True, True, False, True])
    assert SV.kept_round_robin(inset, 3) == [0, 2, 4]
    assert SV.kept_round_robin(inset, 10) == [0, 2, 4, 1]
    assert SV.kept_round_robin(_Set(["eyes"], [False]), 3) == []
