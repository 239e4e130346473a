"""The adapter contract over every registered built-in family, plus the DCGAN families' own checks
(BigGAN's and StyleGAN2's are in their own files)."""

from __future__ import annotations

import pytest
import torch

from latentdirs.errors import OutOfRangeError, UnknownNameError
from tests.contract import FAMILY_FIXTURES, AdapterContract, family_adapter, registered_families


@pytest.fixture(scope="module", params=registered_families())
def family_generator(request):
    """One adapter per registered family, loaded once for the module (the contract restores what it perturbs)."""
    return family_adapter(request, request.param)


class TestAdapterContract(AdapterContract):
    @pytest.fixture
    def generator(self, family_generator):
        return family_generator


def test_every_registered_family_has_a_contract_fixture():
    missing = sorted(set(registered_families()) - set(FAMILY_FIXTURES))
    assert not missing, f"registered families without a fixture in tests/contract.py: {missing}"


def test_a_family_without_a_fixture_fails(request):
    with pytest.raises(pytest.fail.Exception, match="'newgan' is registered but tests/contract.py has no fixture"):
        family_adapter(request, "newgan")


def test_dcgan_truncation_shrinks_z(faces):
    from latentdirs.errors import InvalidValueError

    torch.testing.assert_close(faces.sample(3, seed=1, truncation=0.5), 0.5 * faces.sample(3, seed=1))
    for bad in (0, 1.5, -0.2):
        with pytest.raises(InvalidValueError, match=f"truncation: got {bad!r}; allowed: a number in \\(0, 1\\]"):
            faces.sample(1, seed=0, truncation=bad)


def test_eyes_classes_by_name_and_id(eyes):
    assert eyes.resolve_class("Blue") == 1 == eyes.resolve_class("1") == eyes.resolve_class(1)
    assert eyes.resolve_class(None) == 0
    z = eyes.sample(1, seed=0)
    with torch.no_grad():
        blue, red = eyes.synthesize(z, classes="blue"), eyes.synthesize(z, classes="red")
    assert (blue - red).abs().mean() > 0.01
    with pytest.raises(UnknownNameError, match="class: got 'teal'"):
        eyes.resolve_class("teal")
    with pytest.raises(OutOfRangeError, match="class: got -1"):
        eyes.resolve_class(-1)


def test_folded_batchnorm_renders_the_original_network(faces, eyes):
    for generator in (faces, eyes):
        z = generator.sample(4, seed=9)
        with torch.no_grad():
            folded = generator.synthesize(z, classes=None if not generator.conditional else 3)
            latent = z if not generator.conditional else torch.cat(
                [z, torch.nn.functional.one_hot(torch.full((4,), 3), 8).float()], dim=1)
            original = generator.network.main(latent[:, :, None, None])
        torch.testing.assert_close(folded, original, atol=2e-5, rtol=0)
