"""xfr.data: samplers of table rows and LFW pairs."""
import pandas as pd
import pytest
import torch

from xfr.data import Pair, load_photo, sample_pairs, sample_photo_path, sample_rows


def test_sample_rows_stratified_and_reproducible():
    table = pd.DataFrame({"g": [0] * 50 + [1] * 10, "v": range(60)})
    a = sample_rows(table, 16, seed=3, stratify=["g"])
    b = sample_rows(table, 16, seed=3, stratify=["g"])
    assert a.equals(b)
    assert len(a) == 16 and (a.g == 0).sum() == 8 and (a.g == 1).sum() == 8
    assert len(sample_rows(table, 30, seed=0, stratify=["g"])) == 30  # small group exhausted
    assert len(sample_rows(table, None, seed=0)) == 60
    with pytest.raises(ValueError, match="n must be"):
        sample_rows(table, 0)


def test_sample_pairs_half_genuine():
    pairs = [Pair(f"a{i}", f"b{i}", i % 3 == 0) for i in range(30)]
    got = sample_pairs(pairs, 10, seed=1)
    assert len(got) == 10 and sum(p.same for p in got) == 5
    assert sample_pairs(pairs, 10, seed=1) == got


def test_load_photo():
    astro = load_photo("astronaut")
    assert astro.shape == (3, 512, 512) and astro.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="not found"):
        load_photo("no_such_photo.jpg")
    p = sample_photo_path("grace_hopper")
    assert p is None or p.is_file()
