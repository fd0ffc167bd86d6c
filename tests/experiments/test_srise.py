"""The S-RISE stage's glue (xfr.experiments.srise): triplets, the fully randomized model, Table 1
summaries and the trend's paired bootstrap."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xfr.data import Pair
from xfr.experiments import srise as SR


class _Faces:
    def __init__(self, paths):
        self.paths = set(paths)

    def __contains__(self, p):
        return p in self.paths


def test_lfw_triplets_take_a_non_mate_of_another_identity():
    P = Path
    pairs = [Pair(P("A_0001.jpg"), P("A_0002.jpg"), True), Pair(P("B_0001.jpg"), P("B_0002.jpg"), True),
             Pair(P("C_0001.jpg"), P("A_0003.jpg"), False), Pair(P("D_0001.jpg"), P("E_0001.jpg"), False),
             Pair(P("F_0001.jpg"), P("G_0001.jpg"), False)]
    faces = _Faces([q for p in pairs for q in (p.a, p.b)] )
    trips = SR.lfw_triplets(pairs, faces, 5)
    # A's non-mate skips A_0003 (same identity); B takes the next one
    assert trips == [(P("A_0001.jpg"), P("A_0002.jpg"), P("E_0001.jpg")),
                     (P("B_0001.jpg"), P("B_0002.jpg"), P("G_0001.jpg"))]
    faces = _Faces([q for p in pairs for q in (p.a, p.b)] + [])
    faces.paths.discard(P("B_0002.jpg"))  # a face MTCNN missed: the pair is skipped
    assert [t[0].name for t in SR.lfw_triplets(pairs, faces, 5)] == ["A_0001.jpg"]


class _BufferNet(torch.nn.Module):
    """Weights held as buffers (like the converted TF.js graphs)."""

    def __init__(self, use_weights: bool = True):
        super().__init__()
        self.register_buffer("w", torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
        self.use_weights = use_weights

    def forward(self, x):
        feats = x.mean(dim=(2, 3))
        return feats @ self.w if self.use_weights else feats.repeat(1, 2)[:, :4]


def test_fully_randomized_changes_parameter_layers_and_buffer_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.rand(2, 3, 112, 112)
    rnd = SR.fully_randomized(net, seed=1)
    assert not torch.allclose(rnd(x), net(x))
    buf = _BufferNet()
    rnd = SR.fully_randomized(buf, seed=1)
    assert not torch.allclose(rnd(x), buf(x)) and torch.equal(buf.w, _BufferNet().w)  # original kept
    with pytest.raises(ValueError, match="does not change its output"):
        SR.fully_randomized(_BufferNet(use_weights=False))


def _per_triplet():
    rows = []
    rng = np.random.default_rng(0)
    for t in range(20):
        for variant, drop in (("raw", 0.0), ("centred", 0.2)):
            for k, base in ((10, 0.45), (1000, 0.45 - drop)):
                rows.append(dict(model="m", triplet=t, patches="keep", variant=variant, masks=k,
                                 deletion=base + rng.normal(0, 0.05), insertion=0.3))
        rows.append(dict(model="m", triplet=t, patches="keep", variant="random", masks=0,
                         deletion=0.5, insertion=0.5))
    return pd.DataFrame(rows)


def test_table1_summary_and_trend():
    per = _per_triplet()
    t = SR.table1_summary(per, {10: (0.4466, 0.3582), 1000: (0.2077, 0.1384)})
    row = t[(t.variant == "centred") & (t.masks == 1000)].iloc[0]
    assert row.n_triplets == 20 and row.paper_deletion == 0.2077
    assert np.isnan(t[t.variant == "random"].paper_deletion).all()
    tr = SR.trend(per, 10, 1000).set_index("variant")
    assert tr.loc["centred", "ci_low"] > 0.1  # a clear paired drop
    assert tr.loc["raw", "ci_low"] < 0 < tr.loc["raw", "ci_high"]  # none
    assert set(tr.index) == {"raw", "centred"}
