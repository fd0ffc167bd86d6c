"""The results site (stage ``site``): a static, dependency-free HTML site built from the other
stages' outputs, readable from ``file://`` without a server.

``results/site/`` holds

- ``index.html``: what the suite is, the claims table (paper value vs ours vs verdict, from
  ``results/claims.csv``), one leaderboard per task with only its meaningful columns (from
  ``results/comparison/methods.csv``), and links to every rendered notebook;
- ``explorer.html``: every collection the stages saved with :class:`xfr.gallery.Gallery` (LFW
  pairs, FER faces, detection windows, masked faces, CMS maps per model) as a sortable,
  filterable table; selecting a row shows that item's images and maps side by side with their
  methods, parameters and scores (the X-Maps explorer of ``004_…`` §5, Figs. 7-9);
- ``data.js``: the explorer's data (a script, not JSON fetched at run time: browsers refuse
  ``fetch`` on ``file://``);
- ``img/``: the inputs and their map overlays as JPEG thumbnails;
- ``notebooks/STAGE.html``: each stage's rendered notebook, its inline PNG figures re-encoded as
  JPEG (the HTML nbconvert writes holds them as base64 PNG: 0.7-8.6 MB per stage).

The site is committed (``cache: false`` in dvc.yaml), so a fresh clone shows the last run.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import gallery as G

SITE_DIR = "site"
VERDICT_ORDER = ("reproduced", "not reproduced", "inconclusive", "inconclusive (n too small)")
# leaderboard columns: (csv column, header, direction: +1 higher is better, -1 lower, 0 neither)
METRIC_COLUMNS = [
    ("deletion", "deletion flip fraction", -1), ("insertion", "insertion flip fraction", -1),
    ("deletion_auc", "deletion AUC", -1), ("insertion_auc", "insertion AUC", +1),
    ("box_ap", "AP vs box", +1), ("pointing_game", "pointing game", +1),
    ("stability_pearson", "seed stability (Pearson)", +1), ("stability_spearman", "seed stability (Spearman)", +1),
    ("stability_pixel_std", "pixel std over seeds", -1), ("stability_runs", "runs", 0),
    ("randomized_layers", "randomized layers", 0), ("spearman_randomized", "Spearman to randomized", -1),
    ("ssim_randomized", "SSIM to randomized", -1), ("mean_spearman_randomized", "mean Spearman, cascade", -1),
    ("spearman_randomized_other_seed", "Spearman, other seed", -1),
    ("spearman_trained_two_seeds", "Spearman, trained, two seeds", +1),
    ("average_drop", "average drop %", -1), ("increase_in_confidence", "increase in confidence %", +1),
    ("win", "win %", +1), ("n_images", "images", 0), ("eval_set", "evaluated on", 0),
    ("forward_passes", "forward passes", -1), ("seconds_per_image", "seconds / image", -1),
]


# ----------------------------------------------------------------------------- images
def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` resized so that its longer side is ``size`` px (Lanczos)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if abs(scale - 1.0) < 1e-9:
        return rgb
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(new, Image.Resampling.LANCZOS))


def draw_map(image: np.ndarray, smap: np.ndarray, style: str) -> np.ndarray:
    """The map drawn over its HxWx3 uint8 image in the gallery's ``style`` (see
    :mod:`xfr.gallery`); NaN map pixels (no value, e.g. outside the canonical face) show the image."""
    from .viz import blend_hls, overlay, overlay_fixed

    m = np.asarray(smap, dtype=np.float64)
    missing = ~np.isfinite(m)
    if missing.all():
        return image.copy()
    filled = np.where(missing, np.nanmin(np.where(missing, np.nan, m)), m)
    if style == "saliency":
        out = overlay(image, filled) if np.ptp(filled) > 0 else image.copy()
    elif style == "fixed":
        out = overlay_fixed(image, filled)
    elif style == "signed":
        out = blend_hls(image, np.clip(filled, -1.0, 1.0))
    else:
        raise ValueError(f"unknown map style {style!r}; expected one of {G.STYLES}")
    out = np.array(out, dtype=np.uint8)
    out[missing] = image[missing]
    return out


def _with_box(rgb: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
    from .viz import draw_box

    return rgb if box is None else draw_box(rgb, box)


# ----------------------------------------------------------------------------- explorer data
def gallery_collections(stage_dir: Path, site: Path, thumb: int, quality: int) -> list[dict]:
    """The collections of one stage's gallery with every image and map written as a JPEG
    thumbnail under ``site/img/STAGE/``; paths in the result are relative to ``site``."""
    index, arrays = G.load(stage_dir)
    stage = index["stage"]
    img_dir = site / "img" / stage
    img_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    for name, spec in index["collections"].items():
        out[name] = dict(stage=stage, name=name, title=spec["title"], description=spec["description"],
                         columns=spec["columns"], items=[])
    written: set[str] = set()

    def write(key: str, rgb: np.ndarray) -> str:
        rel = f"img/{stage}/{key}.jpg"
        if key not in written:
            (site / rel).write_bytes(_jpeg(_fit(rgb, thumb), quality))
            written.add(key)
        return rel

    for it in index["items"]:
        images = {im["name"]: im for im in it["images"]}
        entry = dict(id=it["id"], title=it["title"], fields=it["fields"],
                     images=[], maps=[])
        if it["maps"]:  # inputs are drawn only for items the viewer can show maps of
            for im in it["images"]:
                rgb = _with_box(np.asarray(arrays[im["key"]]), im.get("box"))
                entry["images"].append(dict(name=im["name"], label=im["label"], src=write(im["key"], rgb)))
        for mp in it["maps"]:
            im = images[mp["on"]]
            drawn = _with_box(draw_map(np.asarray(arrays[im["key"]]), np.asarray(arrays[mp["key"]], np.float32),
                                       mp["style"]), im.get("box"))
            entry["maps"].append(dict(method=mp["method"], on=mp["on"], style=mp["style"], params=mp["params"],
                                      scores=mp["scores"],
                                      src=write(mp["key"], drawn)))
        out[it["collection"]]["items"].append(entry)
    return list(out.values())


# ----------------------------------------------------------------------------- notebooks
_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')


def compress_notebook_html(text: str, max_width: int, quality: int) -> str:
    """The HTML of a rendered notebook with every inline PNG re-encoded as JPEG (at most
    ``max_width`` px wide, on white where it was transparent)."""
    from PIL import Image

    def repl(match: re.Match) -> str:
        img: Image.Image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            bg = Image.new("RGB", img.size, (255, 255, 255))
            bg.paste(img, mask=img.split()[-1])
            img = bg
        img = img.convert("RGB")
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, optimize=True)
        return 'src="data:image/jpeg;base64,' + base64.b64encode(buf.getvalue()).decode() + '"'

    return _PNG.sub(repl, text)


_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.S)
SHARED_CSS = "nbconvert.css"


def share_head_styles(texts: Sequence[str]) -> tuple[list[str], str]:
    """The leading ``<style>`` blocks of the ``<head>`` that every notebook's HTML has, identical
    (nbconvert's template: ~260 kB per notebook), moved into one stylesheet: returns the
    notebooks with a ``<link>`` to :data:`SHARED_CSS` in their place, and that stylesheet."""
    heads = [_STYLE.findall(t.split("</head>", 1)[0]) for t in texts]
    shared: list[str] = []
    for blocks in zip(*heads):
        if any(b != blocks[0] for b in blocks):
            break
        shared.append(blocks[0])
    if not shared:
        return list(texts), ""
    link = f'<link rel="stylesheet" href="{SHARED_CSS}">'
    out = []
    for t in texts:
        for k, block in enumerate(shared):
            t = t.replace(block, link if k == 0 else "", 1)
        out.append(t)
    css = "\n".join(re.sub(r"^<style[^>]*>|</style>$", "", b) for b in shared)
    return out, css


# ----------------------------------------------------------------------------- tables
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _cell(value, digits: int = 3) -> str:
    text = _fmt(value, digits)
    sort = ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        if not math.isnan(v):
            sort = f' data-sort="{v!r}"'
    return f"<td{sort}>{html.escape(text)}</td>"


def claims_table(claims: pd.DataFrame) -> str:
    """The claims table: one row per claim of the papers with our value, its confidence
    interval, n and the verdict."""
    rows = []
    for r in claims.itertuples():
        ci = "" if pd.isna(r.ci_low) else f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        verdict = str(r.verdict)
        css = "v-" + re.sub(r"[^a-z]+", "-", verdict.lower()).strip("-")
        note = "" if pd.isna(r.note) else str(r.note)
        rows.append(
            f'<tr data-verdict="{html.escape(verdict)}">'
            f"<td>{html.escape(str(r.paper))}</td><td>{html.escape(str(r.where))}</td>"
            f'<td>{html.escape(str(r.claim))}<div class="stat">{html.escape(str(r.statistic))}</div></td>'
            f"<td>{html.escape('' if pd.isna(r.paper_value) else str(r.paper_value))}</td>"
            f'<td data-sort="{"" if pd.isna(r.ours) else repr(float(r.ours))}">{html.escape(_fmt(r.ours))}{html.escape(ci)}</td>'
            f"{_cell(r.n)}"
            f'<td class="{css}">{html.escape(verdict)}</td>'
            f'<td class="note">{html.escape(note)}</td></tr>')
    head = ("<tr><th>paper</th><th>where</th><th>claim (statistic)</th><th>paper's value</th>"
            "<th>ours [95% CI]</th><th>n</th><th>verdict</th><th>note</th></tr>")
    return f'<table class="sortable" id="claims"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def leaderboards(methods: pd.DataFrame) -> str:
    """One sortable table per task of the cross-method table, with only the columns that task
    fills; the header says which direction is better."""
    parts = []
    arrows = {1: " ↑", -1: " ↓", 0: ""}
    for task, g in methods.groupby("task", sort=False):
        cols = [(c, h, d) for c, h, d in METRIC_COLUMNS if c in g and g[c].notna().any()]
        head = "<th>method</th>" + "".join(
            f'<th title="{"higher is better" if d > 0 else "lower is better" if d < 0 else ""}">'
            f"{html.escape(h)}{arrows[d]}</th>" for c, h, d in cols)
        body = "".join("<tr><td>" + html.escape(str(r["method"])) + "</td>"
                       + "".join(_cell(r[c]) for c, _, _ in cols) + "</tr>" for _, r in g.iterrows())
        stage = str(g["stage"].iloc[0]) if "stage" in g else ""
        parts.append(f'<h3 id="task-{html.escape(str(task))}">{html.escape(str(task))}'
                     f' <span class="from">(stage {html.escape(stage)})</span></h3>'
                     f'<table class="sortable leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "\n".join(parts)


def _page(title: str, body: str, scripts: Sequence[str] = ()) -> str:
    tags = "".join(f'<script src="{s}"></script>' for s in scripts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f'<link rel="stylesheet" href="style.css"></head>\n<body>\n'
            f'<nav><a href="index.html">xfr results</a> <a href="explorer.html">explorer</a> '
            f'<a href="index.html#claims-section">claims</a> <a href="index.html#leaderboards">leaderboards</a> '
            f'<a href="index.html#notebooks">notebooks</a></nav>\n'
            f"{body}\n{tags}<script src=\"site.js\"></script>\n</body></html>\n")


def landing_page(claims: pd.DataFrame | None, methods: pd.DataFrame | None, notebooks: Sequence[dict],
                 collections: Sequence[dict]) -> str:
    counts = claims.verdict.value_counts() if claims is not None else pd.Series(dtype=int)
    summary = ", ".join(f"<b>{int(counts[v])}</b> {html.escape(v)}" for v in VERDICT_ORDER if v in counts)
    verdict_options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)} ({int(counts[v])})</option>'
                              for v in VERDICT_ORDER if v in counts)
    claims_html = (f"<p>{len(claims)} claims: {summary}. A verdict comes from a bootstrap confidence "
                   f"interval of our statistic against the claim's threshold (<code>xfr.experiments.claims</code>); "
                   f"<i>n too small</i> marks claims whose default run has fewer items than the test needs "
                   f"(the paper-scale parameters run them). Click a header to sort.</p>"
                   f'<p><label>verdict <select id="verdict-filter"><option value="">all</option>{verdict_options}'
                   f'</select></label> <label>search <input id="claims-search" type="search" placeholder="text in any column">'
                   f'</label> <span id="claims-count"></span></p>'
                   + claims_table(claims)) if claims is not None else "<p>results/claims.csv not found.</p>"
    boards = leaderboards(methods) if methods is not None else "<p>results/comparison/methods.csv not found.</p>"
    nb_rows = "".join(f'<li><a href="{n["href"]}">{html.escape(n["stage"])}</a>: {html.escape(n["about"])} '
                      f'<span class="from">({n["figures"]} figures, {n["kb"]} kB)</span></li>' for n in notebooks)
    coll_rows = "".join(f'<li><a href="explorer.html#{html.escape(c["stage"])}/{html.escape(c["name"])}">'
                        f'{html.escape(c["title"])}</a>: {len(c["items"])} items, '
                        f'{sum(1 for it in c["items"] if it["maps"])} with maps</li>' for c in collections)
    body = f"""<header><h1>xfr: explainable face recognition, replicated</h1>
<p>xfr reruns five papers on explaining face models (MinPlus, S-RISE, CMS, X-Maps and a survey of face
explainability) with real pretrained face models and real face data, and asks of each claim whether it holds:
which parts of a face made a verification, expression, gender, detection or masked-face model decide?
Everything on this site was computed by the pipeline (<code>dvc repro</code>) of the commit that built it;
nothing was typed in by hand.</p></header>
<section id="explore"><h2>Explore the maps</h2><ul>{coll_rows}</ul></section>
<section id="claims-section"><h2>The papers' claims, tested</h2>{claims_html}</section>
<section id="leaderboards"><h2>Leaderboards: the explainers per task</h2>
<p>From the cross-method table (<code>results/comparison/methods.csv</code>); each task shows only the metrics
it measures; ↑ higher is better, ↓ lower is better. Click a header to sort.</p>{boards}</section>
<section id="notebooks"><h2>Rendered notebooks</h2><p>Each stage's executed notebook, with its figures
inline (images re-encoded as JPEG for size).</p><ul>{nb_rows}</ul></section>"""
    return _page("xfr results", body)


def explorer_page() -> str:
    body = """<header><h1>Explorer</h1><p>Every face, pair and window the stages explained. Pick a collection,
sort and filter the table, and select a row to see its images and the map of every method side by side,
with the method's parameters and scores. Heat maps: red = more salient (each map scaled to its own range;
S-RISE on the fixed range [0, 1]); X-Maps: green = similar, red = dissimilar (HLS code, [-1, 1]);
white box: the explained detection.</p></header>
<div id="tabs"></div>
<p id="description"></p>
<div id="filters"></div>
<div id="layout"><div id="table-wrap"><table id="items" class="sortable"></table></div>
<div id="viewer"><p class="hint">Select a row to see its maps.</p></div></div>"""
    return _page("xfr explorer", body, scripts=["data.js"])


NOTEBOOK_ABOUT = {
    "verification": "LFW verification with dlib-resnet: C-Score (X-Maps), MinPlus Fig. 2, S-RISE Figs. 3-5, X-Maps Figs. 3-6",
    "expressions": "FER-2013 expressions (MinPlus Figs. 3-4): methods and seed stability",
    "detection": "MTCNN face detection (MinPlus Fig. 5): AP of the map against the box",
    "sanity_checks": "cascading randomization sanity checks of the explainers",
    "masks": "masked-face detection with a YOLOv5 trained here (MinPlus Figs. 6-7, Table 1)",
    "cms": "Canonical Model Saliency (CMS paper): maps per model, convergence, randomization, Grad-CAM comparison",
    "bias": "CMS bias analysis: gender models, make-up and eye edits, groups",
    "srise": "S-RISE Table 1 (deletion / insertion flips), sanity and occlusion",
    "reliability": "reliability of the explainers on verification: seeds, mask counts, parameters",
    "comparison": "the cross-method table and the claims table",
}


def run_site(params: Mapping, out_root: Path) -> dict:
    """Build ``out_root/site`` from the stage outputs under ``out_root``; returns the site's
    metrics (sizes, counts, seconds), also written to ``site/metrics.json``."""
    t0 = time.perf_counter()
    out_root = Path(out_root)
    site = out_root / SITE_DIR
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    from .site_static import SITE_JS, STYLE_CSS

    (site / "style.css").write_text(STYLE_CSS)
    (site / "site.js").write_text(SITE_JS)
    thumb, quality = int(params["thumbnail_px"]), int(params["jpeg_quality"])
    collections: list[dict] = []
    for stage in params["gallery_stages"]:
        stage_dir = out_root / stage
        if not (stage_dir / G.INDEX_FILE).is_file():
            raise FileNotFoundError(f"site: {stage_dir / G.INDEX_FILE} not found; run the stage {stage!r} first "
                                    f"(dvc repro {stage})")
        collections += gallery_collections(stage_dir, site, thumb, quality)
    (site / "data.js").write_text("window.XFR_DATA = " + json.dumps(
        dict(collections=collections), separators=(",", ":"), allow_nan=False) + ";\n")
    notebooks = []
    (site / "notebooks").mkdir()
    sources = [out_root / stage / f"{stage}.html" for stage in params["notebook_stages"]]
    for src, stage in zip(sources, params["notebook_stages"]):
        if not src.is_file():
            raise FileNotFoundError(f"site: {src} not found; run the stage {stage!r} first (dvc repro {stage})")
    texts, css = share_head_styles([compress_notebook_html(src.read_text(), int(params["notebook_image_px"]),
                                                           int(params["notebook_jpeg_quality"])) for src in sources])
    if css:
        (site / "notebooks" / SHARED_CSS).write_text(css)
    for src, stage, text in zip(sources, params["notebook_stages"], texts):
        dst = site / "notebooks" / f"{stage}.html"
        dst.write_text(text)
        notebooks.append(dict(stage=stage, href=f"notebooks/{stage}.html", about=NOTEBOOK_ABOUT.get(stage, ""),
                              figures=text.count('src="data:image/jpeg;base64,'),
                              kb=round(dst.stat().st_size / 1024), kb_before=round(src.stat().st_size / 1024)))
    claims_file, methods_file = out_root / "claims.csv", out_root / "comparison" / "methods.csv"
    claims = pd.read_csv(claims_file) if claims_file.is_file() else None
    methods = pd.read_csv(methods_file) if methods_file.is_file() else None
    (site / "index.html").write_text(landing_page(claims, methods, notebooks, collections))
    (site / "explorer.html").write_text(explorer_page())
    files = [p for p in site.rglob("*") if p.is_file()]
    metrics = dict(
        size_mb=sum(p.stat().st_size for p in files) / 2**20, n_files=len(files) + 1,
        notebooks={n["stage"]: dict(kb=n["kb"], kb_before=n["kb_before"], figures=n["figures"]) for n in notebooks},
        collections={f'{c["stage"]}/{c["name"]}': dict(items=len(c["items"]),
                                                       with_maps=sum(1 for it in c["items"] if it["maps"]),
                                                       maps=sum(len(it["maps"]) for it in c["items"]))
                     for c in collections},
        claims=0 if claims is None else len(claims), seconds=time.perf_counter() - t0)
    from .report import write_metrics

    write_metrics(site, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from .pipeline import module_stage_main

    return module_stage_main("site", run_site, "Build the static results site results/site/ (stage site)", argv)


if __name__ == "__main__":
    sys.exit(main())
