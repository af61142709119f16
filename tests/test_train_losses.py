"""Losses: equal to the metric definitions on valid frames; invalid and padded frames never matter."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from abaw_rt.train import metrics as M  # noqa: E402
from abaw_rt.train.losses import au_loss, expr_loss, va_loss  # noqa: E402


def _mask(lengths, t):
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


def test_va_loss_is_one_minus_mean_ccc_over_valid_frames():
    g = torch.Generator().manual_seed(0)
    out = torch.rand(3, 20, 2, generator=g) * 2 - 1
    target = torch.rand(3, 20, 2, generator=g) * 2 - 1
    target[0, 3] = -5.0
    mask = _mask([20, 12, 5], 20)
    ok = (mask & (target != -5).all(-1)).numpy()
    p, y = out.numpy()[ok], target.numpy()[ok]
    ref = 1 - (M.ccc(p[:, 0], y[:, 0]) + M.ccc(p[:, 1], y[:, 1])) / 2
    assert abs(va_loss(out, target, mask).item() - ref) < 1e-5


@pytest.mark.parametrize("loss, shape, invalid", [(va_loss, (2,), -5.0), (expr_loss, (8,), -1), (au_loss, (12,), -1.0)])
def test_padded_and_invalid_frames_do_not_change_the_loss(loss, shape, invalid):
    g = torch.Generator().manual_seed(1)
    out = torch.randn((2, 10) + shape, generator=g)
    if loss is expr_loss:
        target = torch.randint(0, 8, (2, 10), generator=g)
        target[0, 2] = invalid
    else:
        target = (torch.rand((2, 10) + shape, generator=g) > 0.5).float() * (2 if loss is va_loss else 1) - (
            1 if loss is va_loss else 0
        )
        target[0, 2] = invalid
    mask = _mask([10, 6], 10)
    base = loss(out, target, mask).item()
    out2 = out.clone()
    out2[1, 6:] = 123.0  # padding
    out2[0, 2] = -77.0  # invalid frame
    assert loss(out2, target, mask).item() == pytest.approx(base, abs=1e-6)
    out3 = out.clone()
    out3[0, 0, 0] += 1.0  # a real, valid frame does matter
    assert loss(out3, target, mask).item() != pytest.approx(base, abs=1e-6)


def test_ce_and_bce_match_their_definitions():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 8, generator=g)
    target = torch.randint(0, 8, (2, 6), generator=g)
    target[1, 0] = -1
    mask = _mask([6, 4], 6)
    ok = (mask & (target != -1)).numpy()
    logp = torch.log_softmax(logits, -1).numpy()[ok]
    ref = -np.mean(logp[np.arange(len(logp)), target.numpy()[ok]])
    assert expr_loss(logits, target, mask).item() == pytest.approx(ref, abs=1e-6)

    au_logits = torch.randn(2, 6, 12, generator=g)
    au_t = (torch.rand(2, 6, 12, generator=g) > 0.5).float()
    au_t[0, 1, :4] = -1
    m = (mask[..., None] & (au_t != -1)).numpy()
    p = torch.sigmoid(au_logits).numpy()[m]
    y = au_t.numpy()[m]
    ref = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert au_loss(au_logits, au_t, mask).item() == pytest.approx(ref, abs=1e-5)


def test_a_batch_without_valid_labels_gives_zero_loss_with_a_gradient():
    out = torch.randn(1, 4, 2, requires_grad=True)
    loss = va_loss(out, torch.full((1, 4, 2), -5.0), _mask([4], 4))
    loss.backward()
    assert loss.item() == 0.0 and out.grad is not None and torch.all(out.grad == 0)
