"""The explorer's gallery files (xfr.gallery) and the results site (xfr.site): known answers on a
tiny synthetic results tree, clear errors, and the site in headless Chromium (tests/browser.py),
both the synthetic one and the committed results/site of the last pipeline run."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.browser import check_site
from xfr import gallery as G
from xfr import site as S
from xfr.assets import REPO_ROOT


def _png_data_uri(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 4), 200, np.uint8), "RGBA").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_results(root, n_pairs: int = 5):
    """A results tree with two stages' galleries, their rendered notebooks, claims and methods."""
    g = torch.Generator().manual_seed(0)
    v = G.Gallery("verification").collection("lfw_pairs", "LFW pairs", "pairs",
                                             columns=["truth", "correct", "C-Score"])
    for i in range(n_pairs):
        it = v.item("lfw_pairs", f"a{i}.jpg|b{i}.jpg", truth="same" if i % 2 else "different",
                    correct=i != 1, **{"C-Score": 0.5 + i / 10})
        it.image("image 1", torch.rand(3, 32, 32, generator=g)).image("image 2", torch.rand(3, 32, 32, generator=g))
        if i < 2:
            it.map("RISE", torch.rand(32, 32, generator=g), on="image 1", params="n_masks=8", seconds=0.1)
            it.map("X-Maps III", torch.rand(32, 32, generator=g) * 2 - 1, on="image 2", style="signed")
    (root / "verification").mkdir(parents=True)
    v.save(root / "verification")
    c = G.Gallery("cms").collection("cms_models", "CMS per model", "maps", columns=["model"])
    m = torch.rand(24, 24, generator=g)
    m[:, :4] = float("nan")
    c.item("cms_models", "m1", model="m1").image("canonical face", torch.rand(3, 24, 24, generator=g)).map(
        "CMS", m, on="canonical face")
    (root / "cms").mkdir()
    c.save(root / "cms")
    for stage in ("verification", "cms"):
        (root / stage / f"{stage}.html").write_text(
            f'<html><body><p>{stage}</p><img src="{_png_data_uri(1500, 300)}"></body></html>')
    pd.DataFrame([
        dict(claim_id="c1", paper="P", where="Table 1", claim="A beats B.", paper_value="0.9", statistic="diff",
             ours=0.1, ci_low=0.05, ci_high=0.2, n=20, n_required=20, verdict="reproduced", source="x", direction=">",
             threshold=0, note=""),
        dict(claim_id="c2", paper="P", where="Fig. 2", claim="C holds.", paper_value="", statistic="mean",
             ours=-0.1, ci_low=-0.3, ci_high=0.1, n=6, n_required=30, verdict="inconclusive (n too small)",
             source="x", direction=">", threshold=0, note="few faces")]).to_csv(root / "claims.csv", index=False)
    (root / "comparison").mkdir()
    pd.DataFrame([
        dict(stage="verification", task="verification", method="rise", deletion=0.2, box_ap=None, seconds_per_image=2.0),
        dict(stage="verification", task="verification", method="lime", deletion=0.3, box_ap=None, seconds_per_image=1.0),
        dict(stage="detection", task="detection", method="rise", deletion=None, box_ap=0.8, seconds_per_image=3.0),
    ]).to_csv(root / "comparison" / "methods.csv", index=False)
    return dict(gallery_stages=["verification", "cms"], notebook_stages=["verification", "cms"],
                thumbnail_px=64, jpeg_quality=80, notebook_image_px=600, notebook_jpeg_quality=70)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    params = make_results(root)
    metrics = S.run_site(params, root)
    return root / "site", metrics


def test_gallery_round_trip(tmp_path):
    gal = G.Gallery("s").collection("c", "C", columns=["x"])
    img = torch.rand(3, 8, 10)
    smap = torch.linspace(0, 1, 80).reshape(8, 10)
    gal.item("c", "one", x=np.float32(0.25)).image("im", img, box=(1, 2, 5, 6)).map(
        "RISE", smap, on="im", params="n=3", ap=float("nan"))
    gal.save(tmp_path)
    index, arrays = G.load(tmp_path)
    it = index["items"][0]
    assert it["fields"] == {"x": 0.25}
    assert it["images"][0]["box"] == [1.0, 2.0, 5.0, 6.0]
    assert it["maps"][0]["scores"] == {"ap": None}  # NaN -> null, valid JSON
    assert arrays[it["images"][0]["key"]].dtype == np.uint8 and arrays[it["images"][0]["key"]].shape == (8, 10, 3)
    stored = arrays[it["maps"][0]["key"]]
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored.astype(np.float32), smap.numpy(), atol=1e-3)


@pytest.mark.parametrize("action, message", [
    (lambda it: it.map("m", torch.zeros(8, 8), on="nope"), "has no image 'nope'"),
    (lambda it: it.map("m", torch.zeros(4, 4), on="im"), "differ|is \\(4, 4\\)"),
    (lambda it: it.map("m", torch.zeros(8, 8), on="im", style="rainbow"), "style must be one of"),
    (lambda it: it.map("m", torch.zeros(1, 8, 8), on="im"), "must be \\[H,W\\]"),
    (lambda it: it.image("im", torch.zeros(3, 8, 8)), "already has an image 'im'"),
])
def test_gallery_errors(action, message):
    gal = G.Gallery("s").collection("c", "C")
    it = gal.item("c", "one").image("im", torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=message):
        action(it)


def test_gallery_unknown_collection_and_duplicate_item():
    gal = G.Gallery("s").collection("c", "C")
    with pytest.raises(ValueError, match="unknown collection 'd'"):
        gal.item("d", "x")
    gal.item("c", "x")
    with pytest.raises(ValueError, match="already has an item 'x'"):
        gal.item("c", "x")


def test_draw_map_styles_and_missing_values():
    image = np.full((6, 6, 3), 100, np.uint8)
    smap = np.tile(np.linspace(0, 1, 6), (6, 1))
    smap[0, :] = np.nan
    for style in ("saliency", "fixed", "signed"):
        out = S.draw_map(image, smap, style)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert (out[0] == 100).all(), f"{style}: a NaN pixel must show the image"
        assert not (out[1:] == 100).all(), f"{style}: the map is not drawn"
    # saliency: the min-max scaled jet map, as xfr.viz.overlay draws it
    from xfr.viz import overlay

    np.testing.assert_array_equal(S.draw_map(image[1:], smap[1:], "saliency"), overlay(image[1:], smap[1:]))
    with pytest.raises(ValueError, match="unknown map style"):
        S.draw_map(image, smap, "rainbow")


def test_compress_notebook_html_reencodes_png_as_smaller_jpeg():
    html = f'<p>x</p><img src="{_png_data_uri(1200, 400)}"><img src="{_png_data_uri(300, 100)}">'
    out = S.compress_notebook_html(html, max_width=600, quality=70)
    assert "image/png" not in out and out.count("data:image/jpeg;base64,") == 2
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size
             for b in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", out)]
    assert sizes == [(600, 200), (300, 100)]
    assert out.startswith("<p>x</p>")


def test_site_files_and_numbers(built_site):
    site, metrics = built_site
    for name in ("index.html", "explorer.html", "data.js", "style.css", "site.js", "metrics.json",
                 "notebooks/verification.html", "notebooks/cms.html"):
        assert (site / name).is_file(), name
    data = json.loads((site / "data.js").read_text().removeprefix("window.XFR_DATA = ").rstrip().rstrip(";"))
    lfw = data["collections"][0]
    assert [len(it["maps"]) for it in lfw["items"]] == [2, 2, 0, 0, 0]
    assert [len(it["images"]) for it in lfw["items"]] == [2, 2, 0, 0, 0]  # inputs drawn only with maps
    for it in lfw["items"][:2]:
        for entry in it["images"] + it["maps"]:
            assert Image.open(site / entry["src"]).size == (64, 64)
    assert metrics["collections"]["verification/lfw_pairs"] == dict(items=5, with_maps=2, maps=4)
    assert metrics["notebooks"]["cms"]["figures"] == 1
    assert metrics["claims"] == 2
    index = (site / "index.html").read_text()
    assert "A beats B." in index and "inconclusive (n too small)" in index
    # one leaderboard per task, each with only the columns it fills
    boards = re.findall(r'<h3 id="task-([a-z]+)".*?<thead><tr>(.*?)</tr>', index, re.S)
    heads = {task: re.findall(r"<th[^>]*>([^<]*)</th>", row) for task, row in boards}
    assert heads["verification"] == ["method", "deletion flip fraction ↓", "seconds / image ↓"]
    assert heads["detection"] == ["method", "AP vs box ↑", "seconds / image ↓"]


def test_site_missing_stage_output_says_which(tmp_path):
    params = make_results(tmp_path)
    (tmp_path / "cms" / "gallery.json").unlink()
    with pytest.raises(FileNotFoundError, match="run the stage 'cms' first"):
        S.run_site(params, tmp_path)


@pytest.mark.slow
def test_synthetic_site_in_browser(built_site, tmp_path):
    done = check_site(built_site[0], tmp_path)
    assert len(done) >= 8


@pytest.mark.slow
def test_committed_site_in_browser(tmp_path):
    """The site committed with the last pipeline run (results/site): what a fresh clone shows."""
    site = REPO_ROOT / "results" / "site"
    if not (site / "index.html").is_file():
        pytest.skip("no committed results/site (dvc repro site builds it)")
    done = check_site(site, tmp_path)
    assert any(d.startswith("LFW pairs: selecting a pair") for d in done)


def test_share_head_styles_moves_the_common_template_css_once():
    head = "<html><head><style>a{}</style>\n<style>b{}</style>{extra}</head><body><style>c{}</style></body></html>"
    texts = [head.replace("{extra}", "<style>x{}</style>"), head.replace("{extra}", "<style>y{}</style>")]
    out, css = S.share_head_styles(texts)
    assert css == "a{}\nb{}"
    for t, own in zip(out, ("x{}", "y{}")):
        assert t.count('<link rel="stylesheet" href="nbconvert.css">') == 1
        assert "a{}" not in t and "b{}" not in t and own in t and "<style>c{}</style>" in t
    assert S.share_head_styles(["<head><style>a</style></head>", "<head><style>b</style></head>"])[1] == ""
