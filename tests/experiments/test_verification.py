"""Logic of xfr.experiments.verification: triplets and failure picks obey their rules, the Table 1
trend reading, fixed-scale overlays and accuracies."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xfr.experiments import verification as V
from xfr.metrics.stability import pearson
from xfr.viz import overlay_fixed


def _table():
    rows = [("A_1", "A_2", True, 0.95), ("B_1", "B_2", True, 0.70), ("C_1", "C_2", True, 0.96),
            ("A_3", "D_1", False, 0.94), ("B_3", "E_1", False, 0.50), ("F_1", "G_1", False, 0.97)]
    df = pd.DataFrame(rows, columns=["a", "b", "same", "similarity"])
    df["a"] = df["a"].map(lambda s: Path(f"/x/{s.split('_')[0]}_000{s.split('_')[1]}.jpg"))
    df["b"] = df["b"].map(lambda s: Path(f"/x/{s.split('_')[0]}_000{s.split('_')[1]}.jpg"))
    df["distance"] = 1 - df["similarity"]
    return df


def test_make_triplets_rules_and_determinism():
    df = _table()
    images = sorted(set(df.a) | set(df.b))
    trip = V.make_triplets(df, images, 2, seed=4, threshold=0.9, accepted_only=True)
    assert trip == V.make_triplets(df, images, 2, seed=4, threshold=0.9, accepted_only=True)
    for p, m, n in trip:
        assert V.identity_of(p) == V.identity_of(m) != V.identity_of(n)
        assert V.identity_of(p) in ("A", "C")  # B's genuine pair is rejected at 0.9
    with pytest.raises(ValueError, match="only 2 triplets"):
        V.make_triplets(df, images, 3, threshold=0.9, accepted_only=True)


def test_failed_verification_prefers_false_accept_with_a_mate():
    df = _table()
    images = sorted(set(df.a) | set(df.b))
    kind, (p, m, n), sim = V.failed_verification(df, images, threshold=0.9)
    # F-G (0.97) is the strongest false accept but neither F nor G has a second image
    assert kind == "false_accept" and sim == pytest.approx(0.94)
    assert V.identity_of(p) == V.identity_of(m) == "A" and V.identity_of(n) == "D" and p != m
    kind, (p, m, n), sim = V.failed_verification(df, images, threshold=0.99)
    assert kind == "false_reject" and sim == pytest.approx(0.70) and V.identity_of(n) != "B"
    no_err = df[df.same | (df.similarity < 0.9)].assign(similarity=lambda d: d.similarity.where(~d.same, 0.99))
    kind, (p, m, n), sim = V.failed_verification(no_err, images, threshold=0.9)
    assert kind == "no_error_closest_imposter" and sim == pytest.approx(0.50)


def test_overlay_fixed_keeps_the_joint_scale():
    img = torch.zeros(3, 8, 8)
    low, high = torch.full((8, 8), 0.2), torch.full((8, 8), 0.9)
    a, b = overlay_fixed(img, low), overlay_fixed(img, high)
    assert not np.array_equal(a, b)  # xfr.viz.overlay would scale both constant maps alike
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8


def test_accuracy_at_and_pearson():
    """accuracy_at, and the Pearson correlation the sensitivity study uses."""
    assert V.accuracy_at([0.9, 0.2, 0.5], [True, False, True], 0.5) == 1.0
    assert V.accuracy_at([0.9, 0.2, 0.5], [True, False, True], 0.6) == pytest.approx(2 / 3)
    x = torch.rand(10, 10)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
