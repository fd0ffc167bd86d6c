"""``xfr explain``: argument handling, and end to end on real faces and models (slow)."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xfr.assets import REPO_ROOT
from xfr.cli import DEFAULT_MASKS, _params, default_masks, main
from xfr.data import DATA_DIR


def test_param_parsing():
    assert _params(["n_masks=100", "p=0.25", "shape=gaussian", "patch_sizes=7,14", "blur=false"]) == {
        "n_masks": 100, "p": 0.25, "shape": "gaussian", "patch_sizes": (7, 14), "blur": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _params(["n_masks"])


def test_missing_file_is_a_clean_error(tmp_path, capsys):
    rc = main(["explain", str(tmp_path / "nope.jpg"), str(tmp_path / "nope2.jpg"),
               "-o", str(tmp_path / "m.png")])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_default_masks_are_the_reliability_stage_s():
    """The CLI's mask counts are results/reliability/defaults.csv (rerun the reliability stage and
    copy its table when this fails)."""
    table = pd.read_csv(REPO_ROOT / "results" / "reliability" / "defaults.csv")
    want: dict = {}
    for r in table.itertuples():
        want.setdefault(r.task, {})[r.method] = None if pd.isna(r.default_masks) else int(r.default_masks)
    assert DEFAULT_MASKS == want
    assert default_masks("gender", "rise") == default_masks("expression", "rise")
    assert default_masks("verification", "rise") >= 500


def _need_data():
    if not (DATA_DIR / "lfw_gray").is_dir():
        pytest.skip("data/ not assembled (python -m xfr.data)")


@pytest.mark.slow
def test_cli_verification_writes_overlay_and_prints_score(tmp_path, capsys):
    _need_data()
    from xfr.data import lfw_pairs
    from xfr.models import load
    from xfr.models.align import detect_and_align
    from xfr.score import verification_score

    pair = next(p for p in lfw_pairs() if p.same)
    out, raw = tmp_path / "map.png", tmp_path / "map.pt"
    rc = main(["explain", "--task", "verification", "--method", "occlusion", "-p", "patch=30",
               "-p", "stride=30", str(pair.a), str(pair.b), "-o", str(out), "--save-map", str(raw)])
    assert rc == 0
    printed = capsys.readouterr().out
    score = float([ln for ln in printed.splitlines() if ln.startswith("score")][0].rsplit("=", 1)[1])
    model = load("dlib-resnet")
    chips = [detect_and_align(p, model.template) for p in (pair.a, pair.b)]
    want = float(verification_score(model, chips[1])(chips[0][None])[0])
    assert score == pytest.approx(want, abs=1e-3)
    with Image.open(out) as im:
        assert im.size == (model.input_size, model.input_size)
    smap = torch.load(raw)
    assert smap.shape == (model.input_size, model.input_size) and torch.isfinite(smap).all()


@pytest.mark.slow
def test_cli_expression_and_detection(tmp_path, capsys):
    _need_data()
    from xfr.data import fer2013

    df = fer2013()
    face = df[df.label == "happy"].path.iloc[0]
    out = tmp_path / "expr.png"
    raw = tmp_path / "expr.npy"
    rc = main(["explain", "--task", "expression", "--class", "happy", "--no-align", "--method",
               "rise", "-p", "n_masks=8", "--backend", "torch", str(face), "-o", str(out), "--raw", str(raw)])
    assert rc == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "P(happy | X)" in printed and "split-half Spearman" in printed
    smap = np.load(raw)
    assert smap.dtype == np.float32 and smap.shape == (48, 48)
    # 8 masks are mostly noise: the CLI says so, and writes it under the picture
    assert "unstable: seed-to-seed rho" in printed
    with Image.open(out) as im:
        assert im.size[1] > im.size[0]
    with pytest.raises(SystemExit, match="unknown class"):
        main(["explain", "--task", "expression", "--class", "joy", "--no-align", str(face),
              "-o", str(out)])
    photo = DATA_DIR / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg"
    out = tmp_path / "det.png"
    rc = main(["explain", "--task", "detection", "--method", "occlusion", "-p", "patch=48",
               "-p", "stride=48", str(photo), "-o", str(out)])
    assert rc == 0
    with Image.open(out) as im:  # the 96 px window around the face, enlarged 4x
        assert im.size == (384, 384)
    printed = capsys.readouterr().out
    assert "MTCNN score of box" in printed and "resized to 96 px" in printed
    rc = main(["explain", "--task", "detection", "--method", "occlusion", "-p", "patch=125",
               "-p", "stride=125", "--context", "0", str(photo), "-o", str(out)])
    assert rc == 0
    with Image.open(out) as im, Image.open(photo) as src:  # --context 0: the whole photo
        assert im.size == src.size
