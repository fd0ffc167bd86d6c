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


def _bad_inputs(tmp_path):
    """(case, argv, what the message says) for the user errors the CLI must catch before any
    model loads."""
    from PIL import Image as PILImage

    face = tmp_path / "face.png"
    PILImage.new("RGB", (64, 64), (128, 100, 90)).save(face)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    buf = tmp_path / "full.jpg"
    PILImage.new("RGB", (64, 64), (10, 200, 30)).save(buf, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.read_bytes()[: len(buf.read_bytes()) // 2])
    tiny = tmp_path / "tiny.png"
    PILImage.new("RGB", (1, 1)).save(tiny)
    out = str(tmp_path / "map.png")
    f = str(face)
    return [
        ("unknown -p key", [f, f, "-o", out, "-p", "unknown_key=1"], "has no parameter 'unknown_key'"),
        ("n_masks with minplus", [f, f, "-o", out, "-p", "n_masks=20"], "minplus has no parameter 'n_masks'"),
        ("-p batch_size", [f, f, "-o", out, "--method", "rise", "-p", "batch_size=0"], "use --batch-size"),
        ("--batch-size 0", [f, f, "-o", out, "--batch-size", "0"], "--batch-size must be >= 1"),
        ("-p n_masks=0", [f, f, "-o", out, "--method", "rise", "-p", "n_masks=0"], "integer >= 1"),
        ("-p p=abc", [f, f, "-o", out, "--method", "rise", "-p", "p=abc"], "must be a number"),
        ("-p without =", [f, f, "-o", out, "-p", "n_masks"], "KEY=VALUE"),
        ("output not .png", [f, f, "-o", str(tmp_path / "map.jpg")], "must end in .png"),
        ("output folder missing", [f, f, "-o", str(tmp_path / "no" / "map.png")], "does not exist"),
        ("--raw not .npy", [f, f, "-o", out, "--raw", str(tmp_path / "m.txt")], "must end in .npy"),
        ("nonexistent image", [str(tmp_path / "nope.jpg"), f, "-o", out], "not found"),
        ("zero-byte image", [str(empty), f, "-o", out], "empty (0 bytes)"),
        ("truncated JPEG", [str(truncated), f, "-o", out], "not a readable image"),
        ("1x1 image", [str(tiny), f, "-o", out], "1x1 px"),
        ("one image for verification", [f, "-o", out], "needs two images"),
        ("no --class", ["--task", "expression", f, "-o", out], "--class is required"),
        ("unknown class", ["--task", "expression", "--class", "joy", f, "-o", out], "unknown class 'joy'"),
        ("unknown class, faceres", ["--task", "gender", "--model", "faceres-gender", "--class", "woman", f,
                                    "-o", out], "the model's classes are ['female', 'male']"),
        ("xmaps off verification", ["--task", "detection", "--method", "xmaps", f, "-o", out], "xmaps explains"),
        ("gradient on detection", ["--task", "detection", "--method", "gradient", f, "-o", out], "no gradient"),
        ("-p n_steps=0", ["--task", "expression", "--class", "happy", "--method", "integrated-gradients",
                          "-p", "n_steps=0", f, "-o", out], "integer >= 1"),
        ("no output", [f, f], "-o map.png"),
        ("bad --box", ["--task", "detection", "--box", "5", "5", "1", "1", f, "-o", out], "--box must be"),
    ]


def test_bad_inputs_are_one_line_errors_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import xfr.models

    def no_model(name, *a, **k):
        raise AssertionError(f"a model ({name}) was loaded before the arguments were checked")

    monkeypatch.setattr(xfr.models, "load", no_model)
    for case, argv, says in _bad_inputs(tmp_path):
        before = sorted(tmp_path.rglob("*"))
        assert main(["explain", *argv]) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert says in err, (case, err)
        assert sorted(tmp_path.rglob("*")) == before, f"{case}: something was written"
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: the same style
        main(["explain", "--task", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --task") and err.count("\n") == 1


def test_help_lists_defaults_and_params(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for option in ("--seed", "--batch-size", "--progress", "--quiet", "--help-params"):
        assert option in text
    assert "(default: 64)" in text and "(default: 0)" in text
    assert main(["explain", "--help-params"]) == 0
    listed = capsys.readouterr().out
    assert "rise: n_masks=500, s=8, p=0.5" in listed and "minplus: width=None" in listed


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
    assert "decision: " in printed and "threshold 0.6" in printed  # dlib's own verdict
    with Image.open(out) as im:  # a titled figure: reference, probe, map with its colour bar
        assert im.size[0] > 3 * model.input_size and im.size[1] > model.input_size
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
    with Image.open(out) as im:  # face, map and colour bar side by side, the warning under them
        assert im.size[0] > im.size[1] > 48
    capsys.readouterr()
    assert main(["explain", "--task", "expression", "--class", "joy", "--no-align", str(face),
                 "-o", str(out)]) == 2
    assert "unknown class 'joy'" in capsys.readouterr().err
    photo = DATA_DIR / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg"
    out = tmp_path / "det.png"
    rc = main(["explain", "--task", "detection", "--method", "occlusion", "-p", "patch=48",
               "-p", "stride=48", str(photo), "-o", str(out)])
    assert rc == 0
    with Image.open(out) as im:  # the window with the box, and the map
        assert im.size[0] > im.size[1] > 96
    printed = capsys.readouterr().out
    assert "MTCNN score of box" in printed and "resized to 96 px" in printed
    rc = main(["explain", "--task", "detection", "--method", "occlusion", "-p", "patch=125",
               "-p", "stride=125", "--context", "0", str(photo), "-o", str(out), "--raw", str(raw)])
    assert rc == 0
    with Image.open(photo) as src:  # --context 0: the map covers the whole photo
        assert np.load(raw).shape == (src.size[1], src.size[0])
    assert "window" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated-gradients", "grad-cam",
                                    "guided-backprop", "deeplift", "lrp", "guided-grad-cam"])
def test_cli_white_box_methods_on_an_expression(tmp_path, capsys, method):
    """The white-box methods run from the CLI on the PyTorch model (xfr.explain.gradients,
    xfr.explain.cam)."""
    _need_data()
    face = sorted((DATA_DIR / "fer2013_privatetest" / "happy").glob("*.jpg"))[0]
    out, raw = tmp_path / "map.png", tmp_path / "map.npy"
    extra = {"smoothgrad": ["-p", "n_samples=8"], "integrated-gradients": ["-p", "n_steps=16"]}.get(method, [])
    rc = main(["explain", "--task", "expression", "--class", "happy", "--no-align", "--method", method,
               *extra, str(face), "-o", str(out), "--raw", str(raw)])
    assert rc == 0
    smap = np.load(raw)
    assert smap.dtype == np.float32 and smap.shape == (48, 48) and float(smap.std()) > 0
    assert "P(happy | X)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("model, method, message", [
    ("mini-xception-fer2013", "excitation-backprop", "non-negative inputs"),
    ("faceres-gender", "deeplift", "TF.js graph"),
])
def test_cli_unsupported_white_box_pairs_are_one_line_errors(tmp_path, capsys, model, method, message):
    """Module-based methods the model cannot run (xfr.explain.white_box.white_box_support)."""
    _need_data()
    face = sorted((DATA_DIR / "fer2013_privatetest" / "happy").glob("*.jpg"))[0]
    cls = "happy" if model.startswith("mini") else "female"
    task = "expression" if model.startswith("mini") else "gender"
    rc = main(["explain", "--task", task, "--model", model, "--class", cls, "--no-align",
               "--method", method, str(face), "-o", str(tmp_path / "map.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
