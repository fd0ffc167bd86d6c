"""xfr.experiments.expressions: face picking, the method runner (LIME / LIME-map sharing one run,
seeds, batch sizes), seed runs, stability table, MinPlus with its parts."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xfr import report as R
from xfr.experiments import expressions as E
from xfr.explain import minplus
from xfr.explain.runner import run_methods, stability_table


class MeanIntensityClassifier(torch.nn.Module):
    """3 classes; logits peak at mean intensity 0.2, 0.5, 0.8 respectively."""

    centers = torch.tensor([0.2, 0.5, 0.8])

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))[:, None]
        return -50.0 * (m - self.centers[None]) ** 2


def _write(path, value, size=8):
    Image.fromarray(np.full((size, size), int(round(value * 255)), np.uint8)).save(path)
    return path


@pytest.fixture
def table(tmp_path):
    rows = []
    # class "b" (y=1): file order a, b, c; intensities 0.45, 0.5, 0.9 -> predicted 1, 1, 2
    for name, v in (("b_a.png", 0.45), ("b_b.png", 0.5), ("b_c.png", 0.9)):
        rows.append((_write(tmp_path / name, v), "b", 1))
    # class "a" (y=0): all look like class c -> none correct
    for name, v in (("a_a.png", 0.8), ("a_b.png", 0.9)):
        rows.append((_write(tmp_path / name, v), "a", 0))
    return pd.DataFrame(rows, columns=["path", "label", "y"])


def smooth_score(x):
    """A smooth score of the image: weighted mean with a bump at the centre-left."""
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    wgt = torch.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * (h / 5) ** 2))
    return (x.mean(1) * wgt).sum((1, 2)) / wgt.sum()


def test_pick_confident_faces_takes_the_most_confident_correct_candidate(table):
    model = MeanIntensityClassifier()
    got = E.pick_confident_faces(model, table, ["b"], n_candidates=3)
    assert got.path.iloc[0].name == "b_b.png"
    assert got.n_correct.iloc[0] == 2 and got.n_candidates.iloc[0] == 3
    expected = torch.softmax(model(torch.full((1, 3, 8, 8), round(0.5 * 255) / 255)), 1)[0, 1]
    assert got.prob.iloc[0] == pytest.approx(float(expected), abs=1e-5)
    # only the first candidate in file order: the choice is that one
    assert E.pick_confident_faces(model, table, ["b"], n_candidates=1).path.iloc[0].name == "b_a.png"


def test_pick_confident_faces_errors(table):
    model = MeanIntensityClassifier()
    with pytest.raises(ValueError, match="none of the first"):
        E.pick_confident_faces(model, table, ["a"])
    with pytest.raises(ValueError, match="no images of class"):
        E.pick_confident_faces(model, table, ["zzz"])


def test_resize_face():
    img = torch.rand(3, 48, 48)
    assert E.resize_face(img, 96).shape == (3, 96, 96)
    assert E.resize_face(img, 24).shape == (3, 24, 24)
    assert torch.equal(E.resize_face(img, 48), img)


def test_minplus_with_parts_matches_minplus_and_method_row():
    img = torch.rand(3, 32, 32)
    t, parts = E.minplus_with_parts(smooth_score, img, batch_size=5, step=8, t_max=2)
    assert torch.allclose(t.map, minplus(smooth_score, img, step=8, t_max=2))
    assert t.n_forward == parts.n_forward > 0
    row = R.method_row("expressions", "minplus", [t, t], stability_pearson=1.0)
    assert row["method"] == "MinPlus" and row["forward_passes"] == t.n_forward
    assert row["seconds_per_image"] == pytest.approx(t.seconds)


def test_figures_are_written(tmp_path):
    img = torch.rand(3, 24, 24)
    res = run_methods(smooth_score, img, {"rise": dict(n_masks=4), "minplus": dict(step=8, t_max=1)})
    E.fig_methods([img], ["x"], [res], tmp_path / "a.png", title="t")
    runs = {"rise": [res["rise"], run_methods(smooth_score, img, {"rise": dict(n_masks=4)}, seed=1)["rise"]]}
    stab, _ = stability_table(runs)
    E.fig_runs(img, runs, stab, tmp_path / "b.png", title="t", seeds=[0, 1])
    _, parts = E.minplus_with_parts(smooth_score, img, step=8, t_max=1)
    E.fig_minplus_parts(img, parts, tmp_path / "c.png", title="t")
    assert all((tmp_path / n).stat().st_size > 0 for n in ("a.png", "b.png", "c.png"))


@pytest.mark.slow
def test_fer_faces_are_confident_and_correct(data_dir):
    from xfr import models
    from xfr.data import fer2013

    model = models.load("mini-xception-fer2013")
    got = E.pick_confident_faces(model, fer2013(data_dir), ["happy", "angry"], n_candidates=16)
    assert list(got.label) == ["happy", "angry"]
    assert (got.prob > 0.5).all() and (got.n_correct >= 1).all()
