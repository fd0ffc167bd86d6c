"""The perturbation engine: batching invariance, forward-pass counts, input checks."""
import pytest
import torch

from xfr.engine import Counting, CountingScore, apply_masks, perturb


def linear_f(weights):
    def f(x):
        return (x * weights).flatten(1).sum(1)
    return f


def test_scores_match_direct_evaluation_for_every_batch_size():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 9, 11, generator=g)
    w = torch.rand(3, 9, 11, generator=g)
    masks = (torch.rand(23, 9, 11, generator=g) > 0.5).float()
    direct = linear_f(w)(masks[:, None] * img + (1 - masks[:, None]) * 0.25)
    for bs in (1, 7, 64):
        res = perturb(linear_f(w), img, masks, fill=0.25, batch_size=bs)
        torch.testing.assert_close(res.scores, direct)
        assert res.n_forward == 23
        assert res.seconds_wall >= res.seconds_in_f > 0


def test_fill_modes():
    img = torch.rand(3, 4, 4)
    zero = torch.zeros(1, 4, 4)
    out = apply_masks(img, zero, img.mean(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(out[0].mean(dim=(1, 2)), img.mean(dim=(1, 2)))
    res = perturb(lambda x: x.mean((1, 2, 3)), img, zero, fill="mean")
    torch.testing.assert_close(res.scores[0], img.mean())
    with pytest.raises(ValueError, match="unknown fill"):
        perturb(lambda x: x.mean((1, 2, 3)), img, zero, fill="purple")


def test_bad_inputs_raise_clear_errors():
    img = torch.rand(3, 8, 8)
    ok = torch.ones(2, 8, 8)
    with pytest.raises(ValueError, match="empty mask set"):
        perturb(lambda x: x.mean((1, 2, 3)), img, torch.ones(0, 8, 8))
    with pytest.raises(ValueError, match="one score per image"):
        perturb(lambda x: x.mean((2, 3)), img, ok)
    with pytest.raises(ValueError, match="NaN"):
        perturb(lambda x: x.mean((1, 2, 3)) * float("nan"), img, ok)
    with pytest.raises(ValueError, match="masks must have shape"):
        perturb(lambda x: x.mean((1, 2, 3)), img, torch.ones(2, 7, 8))
    with pytest.raises(ValueError, match="batch_size"):
        perturb(lambda x: x.mean((1, 2, 3)), img, ok, batch_size=0)
    with pytest.raises(ValueError, match=r"\[C,H,W\]"):
        perturb(lambda x: x.mean((1, 2, 3)), torch.rand(8, 8), ok)


def test_counting_score_accumulates():
    f = CountingScore(lambda x: x.mean((1, 2, 3)))
    img = torch.rand(3, 5, 5)
    perturb(f, img, torch.ones(5, 5, 5), batch_size=2)
    perturb(f, img, torch.ones(4, 5, 5), batch_size=3)
    assert f.n_forward == 9 and f.n_calls == 5


def test_inference_mode_inside_f():
    seen = []

    def f(x):
        seen.append(torch.is_inference_mode_enabled())
        return x.mean((1, 2, 3))
    perturb(f, torch.rand(3, 4, 4), torch.ones(3, 4, 4))
    assert seen and all(seen)


def test_counting_wraps_embedders_without_checking_and_keeps_outputs():
    """One counter for score functions and embedders: [N, D] outputs pass unchecked, are kept
    with ``keep``, and ``reset`` zeroes the counts."""
    emb = Counting(lambda x: x.flatten(1)[:, :4], keep=True)
    a, b = emb(torch.rand(3, 3, 4, 4)), emb(torch.rand(2, 3, 4, 4))
    assert a.shape == (3, 4) and emb.n_forward == 5 and emb.n_calls == 2 and emb.seconds > 0
    assert len(emb.outputs) == 2 and emb.outputs[1] is b
    emb.reset()
    assert (emb.n_forward, emb.n_calls, emb.seconds, emb.outputs) == (0, 0, 0.0, [])
    with pytest.raises(ValueError, match="one score per image"):
        CountingScore(lambda x: x.flatten(1)[:, :4])(torch.rand(3, 3, 4, 4))
    assert isinstance(CountingScore(lambda x: x.mean((1, 2, 3))), Counting)


def test_perturb_counts_through_a_counting_embedder():
    """A score built on a counting embedder: the embedder sees every perturbed image once."""
    emb = Counting(lambda x: x.flatten(1)[:, :4])
    res = perturb(lambda x: emb(x).sum(1), torch.rand(3, 5, 5), torch.ones(7, 5, 5), batch_size=3)
    assert res.n_forward == emb.n_forward == 7 and emb.n_calls == 3
