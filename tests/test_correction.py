"""Per-image correction of calibrated steps (latentdirs.correction, edit --correct-amounts): a known answer
with a render whose gain differs by image, and the refusals. The learned-generator case is in
tests/test_regression_space.py (shapes-stylegan2 in w)."""

from __future__ import annotations

import pytest
import torch

from latentdirs.correction import corrected_steps
from latentdirs.errors import InvalidValueError
from latentdirs.measure import measure_amounts
from latentdirs.plan import Strengths

SIDE = 32
GAINS = torch.tensor([0.5, 1.6, 1.0, 0.8, 1.3])  # fraction of the width moved per unit step, per image


def _blobs(steps: torch.Tensor) -> torch.Tensor:
    """``[B, 3, SIDE, SIDE]`` in [−1, 1]: one Gaussian disc per image, centred at x = −0.1 + gain·step
    (fraction of the width from the centre), so an image's step achieves exactly ``gain × step``."""
    coords = (torch.arange(SIDE) + 0.5) / SIDE - 0.5
    centre = -0.1 + GAINS[: steps.numel()] * steps.float()
    xx = coords.view(1, 1, SIDE) - centre.view(-1, 1, 1)
    yy = coords.view(1, SIDE, 1).expand(-1, -1, SIDE)
    disc = torch.exp(-(xx.square() + yy.square()) / (2 * 0.06 ** 2))
    return (disc * 1.8 - 0.9).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def test_corrected_steps_find_each_images_own_gain():
    """The calibration assumed gain 1 for every image (step = request): the correction finds request / gain,
    image by image, to a few percent; a fixed (clamped) row and a zero request keep their steps."""
    requested = torch.tensor([0.12, -0.12, 0.08, 0.0, 0.1])
    calibrated = requested.clone()
    fixed = torch.tensor([False, False, False, False, True])
    found = corrected_steps(_blobs, calibrated, requested, fixed, "shift-x", span=0.3)
    torch.testing.assert_close(found[:3], requested[:3] / GAINS[:3], rtol=0.05, atol=0.0)
    assert found[3] == 0 and found[4] == calibrated[4]
    before = measure_amounts(_blobs(torch.zeros(5)), _blobs(calibrated), "shift-x", low=-0.3, high=0.3, steps=121)
    after = measure_amounts(_blobs(torch.zeros(5)), _blobs(found), "shift-x", low=-0.3, high=0.3, steps=121)
    # registration itself reads a 0.12 shift of this disc as 0.13 (its grid and pixel sampling): the
    # correction is as good as the measurement, and far better than one step for every image
    assert float((after - requested)[:3].abs().max()) < 0.015 and float((before - requested)[:2].abs().min()) > 0.04


def test_a_step_is_not_pushed_past_three_times_the_calibrated_one():
    """An image whose edit barely moves (gain 0.05 would need 20× the step) stops at 3× the calibrated step."""
    global GAINS
    saved, GAINS = GAINS, torch.tensor([0.05])
    try:
        found = corrected_steps(_blobs, torch.tensor([0.1]), torch.tensor([0.1]), torch.tensor([False]),
                                "shift-x", span=0.3)
    finally:
        GAINS = saved
    assert float(found[0]) == pytest.approx(0.3)


def test_correction_without_calibrated_amounts_is_refused_in_one_line():
    with pytest.raises(InvalidValueError, match=r"^correct_amounts: got True; allowed: only with amounts \(a "
                                                r"calibrated edit\)\. Drop --correct-amounts"):
        Strengths((1.0, 2.0), calibrated=False, correct=True)
    words = Strengths((0.1,), calibrated=True, clamp=True, correct=True).command_words()
    assert words == ["--amounts", "0.1", "--clamp-amounts", "--correct-amounts"]
