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


@pytest.mark.parametrize("by", ["registration", "saliency"])
def test_a_saturating_response_is_met_by_interpolating_between_short_and_long_steps(by):
    """Each image moves ``gain · tanh(step / 0.2) · 0.2``: a secant through the origin keeps overshooting
    or falling short near saturation; once a step is known on each side of the request the correction
    interpolates between them, so every request is met to well under a pixel of this 32 px image."""
    def saturating(steps: torch.Tensor) -> torch.Tensor:
        return _blobs(0.2 * torch.tanh(steps / 0.2))

    requested = torch.tensor([0.07, -0.12, 0.08, 0.1, -0.09])
    found = corrected_steps(saturating, requested.clone(), requested, torch.zeros(5, dtype=torch.bool), "shift-x",
                            span=0.3, by=by)
    achieved = GAINS * 0.2 * torch.tanh(found / 0.2)  # the render's own known answer, not a measurement
    assert float((achieved - requested).abs().max()) * SIDE < 0.5


def test_saliency_steers_to_the_known_answer_where_the_object_changes_colour():
    """The disc turns from bright to dark as it moves (so a moved copy of the source matches the edit
    worse than a mismatch): registration misreads the edit, the saliency barycentre follows the disc."""
    def turning(steps: torch.Tensor) -> torch.Tensor:
        images = _blobs(steps)
        flip = (steps.view(-1, 1, 1, 1) != 0).float()
        return images * (1 - 2 * flip) * torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1) ** flip

    requested = torch.tensor([0.12, -0.12, 0.08])
    calibrated = requested.clone()
    fixed = torch.zeros(3, dtype=torch.bool)
    found = corrected_steps(turning, calibrated, requested, fixed, "shift-x", span=0.3, by="saliency")
    torch.testing.assert_close(found, requested / GAINS[:3], rtol=0.03, atol=0.0)
    misled = corrected_steps(turning, calibrated, requested, fixed, "shift-x", span=0.3, by="registration")
    assert float((misled - requested / GAINS[:3]).abs().max()) > 0.03


def test_correction_without_calibrated_amounts_is_refused_in_one_line():
    with pytest.raises(InvalidValueError, match=r"^correct_amounts: got 'registration'; allowed: only with amounts "
                                                r"\(a calibrated edit\)\. Drop --correct-amounts"):
        Strengths((1.0, 2.0), calibrated=False, correct="registration")
    with pytest.raises(InvalidValueError, match=r"^correct_amounts: got 'centroid'; allowed: 'registration' or "
                                                r"'saliency' \(True: registration\)$"):
        Strengths((0.1,), calibrated=True, correct="centroid")
    with pytest.raises(InvalidValueError, match=r"^by: got 'centroid'; allowed: 'registration' or 'saliency'$"):
        corrected_steps(_blobs, torch.ones(1), torch.ones(1), torch.zeros(1, dtype=torch.bool), "shift-x", span=0.3,
                        by="centroid")
    words = Strengths((0.1,), calibrated=True, clamp=True, correct="registration").command_words()
    assert words == ["--amounts", "0.1", "--clamp-amounts", "--correct-amounts", "registration"]
    words = Strengths((0.1,), calibrated=True, correct="saliency").command_words()
    assert words == ["--amounts", "0.1", "--correct-amounts", "saliency"]
