"""xfr.faces.align: detection and 5-point alignment of real LFW images."""
import numpy as np
import pytest

from xfr.experiments import verification as V
from xfr.faces.align import align_faces
from xfr.score import embed_chips


@pytest.mark.slow
def test_align_faces_on_real_lfw_images():
    from xfr.data import lfw_pairs
    from xfr.models import load
    from xfr.models.align import TEMPLATES
    from xfr.models.detect import MTCNNDetector

    pairs = lfw_pairs()
    same = next(p for p in pairs if p.same)
    other = next(p for p in pairs if not p.same and V.identity_of(p.a) != V.identity_of(same.a))
    faces = align_faces([same.a, same.b, other.a], MTCNNDetector(min_face_size=50).eval())
    assert faces.missing == [] and faces.chips.shape == (3, 3, 150, 150)
    tpl = TEMPLATES["dlib150"].array()
    # the similarity transform maps the detected landmarks close to the template positions
    err = np.linalg.norm(faces.landmarks.numpy() - tpl[None], axis=-1).mean()
    assert err < 6.0
    emb = embed_chips(load("dlib-resnet"), faces.chips_at(112))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])
