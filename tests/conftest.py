import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from xfr.data import DATA_DIR  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    if not (DATA_DIR / "lfw_gray").is_dir():
        pytest.fail(f"{DATA_DIR} is not assembled: run `python -m xfr.data` (scripts/setup.sh does)")
    return DATA_DIR
