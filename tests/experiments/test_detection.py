"""xfr.experiments.detection: photo loading, face windows (geometry, box mapping, matching with a
fake detector), AP / pointing / interpolated PR of maps against a box."""
import torch

from xfr.experiments import detection as D
from xfr.faces import windows as W


def test_fig_detection_written(tmp_path):
    import pandas as pd

    from xfr.report import Timed

    fw = W.FaceWindow("p#0", "p", torch.rand(3, 32, 32), torch.tensor([8.0, 8.0, 24.0, 24.0]), 0.9,
                      (0, 0, 32, 32), torch.tensor([8.0, 8.0, 24.0, 24.0]), 1.0)
    res = {"rise": Timed(torch.rand(32, 32), 1.0, 10)}
    scores = pd.DataFrame([dict(face="p#0", method="RISE", ap=0.5, pointing_game=1.0)])
    D.fig_detection([fw], [res], scores, tmp_path / "f.png", title="t")
    D.fig_photos([("p", torch.rand(3, 40, 60), torch.tensor([[1.0, 1.0, 9.0, 9.0]]), [fw])], tmp_path / "g.png")
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0


