"""xfr.report: methods.csv rows, nested metrics flattened."""

import pytest

from xfr import report as R


def test_flatten_metrics_joins_nested_keys():
    nested = {"rise": {"box_ap": 0.5, "stability": {"pearson": 1.0}}, "lime_map": {"box_ap": 0.25},
              "n_faces": 3, "ranking": ["a", "b"], "empty": {}}
    assert R.flatten_metrics(nested) == {"rise_box_ap": 0.5, "rise_stability_pearson": 1.0,
                                         "lime_map_box_ap": 0.25, "n_faces": 3, "ranking": ["a", "b"]}
    # an empty dict has no leaves; one name from two paths is an error
    with pytest.raises(ValueError, match="twice"):
        R.flatten_metrics({"a_b": 1, "a": {"b": 2}})
    assert R.flatten_metrics({"a": {"b": 1}}, sep="/") == {"a/b": 1}


def test_saved_figures_are_shown_inline_only_in_a_notebook_kernel(tmp_path, monkeypatch):
    import IPython
    import IPython.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from xfr import viz

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))

    def save_both(tag):
        R.savefig(plt.figure(), tmp_path, f"{tag}.png")
        viz.side_by_side([[("a", np.zeros((4, 4, 3), dtype=np.uint8))]], tmp_path / f"{tag}_grid.png")

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a script, a test, the CLI
    save_both("script")
    assert shown == []
    kernel = type("Shell", (), {"kernel": object()})()  # what ipykernel (papermill) runs
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel)
    save_both("kernel")
    assert len(shown) == 2 and all(isinstance(s, IPython.display.Image) for s in shown)
    assert shown[0].data == (tmp_path / "kernel.png").read_bytes()
    assert shown[1].data == (tmp_path / "kernel_grid.png").read_bytes()
