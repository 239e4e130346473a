"""The shared adapter contract: every generator adapter's test class mixes this in.

Subclasses provide a ``generator`` fixture (an adapter on the CPU) and may set ``batch`` or
``mutable_parameter`` (the name of a parameter to perturb for the fingerprint check).
"""

from __future__ import annotations

import pytest
import torch

from latentdirs.generators.base import GeneratorAdapter


class AdapterContract:
    batch = 3

    def test_is_adapter(self, generator):
        assert isinstance(generator, GeneratorAdapter)
        assert generator.default_space in generator.spaces
        assert "z" in generator.spaces

    def test_sample_shapes_every_space(self, generator):
        for name, space in generator.spaces.items():
            latents = generator.sample(self.batch, seed=1, space=name)
            assert tuple(latents.shape) == space.shape(self.batch)
            assert latents.dtype == torch.float32

    def test_synthesize_shape_and_range(self, generator):
        with torch.no_grad():
            images = generator.synthesize(generator.sample(self.batch, seed=2))
        assert tuple(images.shape) == (self.batch, 3, generator.resolution, generator.resolution)
        assert images.dtype == torch.float32
        assert torch.isfinite(images).all()
        assert images.min() >= -1.05 and images.max() <= 1.05
        assert images.std() > 0.05, "a flat image is not a rendering"

    def test_determinism_per_seed(self, generator):
        a = generator.sample(2, seed=7)
        b = generator.sample(2, seed=7)
        c = generator.sample(2, seed=8)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        with torch.no_grad():
            assert torch.equal(generator.synthesize(a), generator.synthesize(b))

    def test_seed_latent_independent_of_batch(self, generator):
        together = generator.sample_seeds([3, 4, 5])
        alone = generator.sample_seeds([4])
        assert torch.equal(together[1:2], alone)

    def test_gradients_flow(self, generator):
        latents = generator.sample(2, seed=3).requires_grad_(True)
        generator.synthesize(latents).square().mean().backward()
        assert latents.grad is not None and latents.grad.abs().sum() > 0
        assert all(p.grad is None for p in generator.network.parameters()), "the network must stay frozen"

    def test_spaces_round_trip(self, generator):
        z = generator.sample(2, seed=4)
        for name in generator.spaces:
            mapped = generator.to_space(z, "z", name)
            with torch.no_grad():
                direct = generator.synthesize(generator.sample(2, seed=4, space=name), space=name)
                via = generator.synthesize(mapped, space=name)
            torch.testing.assert_close(direct, via)

    def test_fingerprint_stable_and_sensitive(self, generator):
        first = generator.fingerprint()
        assert first.startswith("sha256:") and first == generator.fingerprint()
        parameter = next(p for p in generator.network.parameters() if p.numel() > 0)
        original = parameter.detach().clone()
        try:
            with torch.no_grad():
                parameter.view(-1)[0] += 1e-3
            generator._fingerprint = None
            assert generator.fingerprint() != first
        finally:
            with torch.no_grad():
                parameter.copy_(original)
            generator._fingerprint = None
        assert generator.fingerprint() == first

    def test_describe_is_json(self, generator):
        import json

        described = json.loads(json.dumps(generator.describe()))
        assert described["fingerprint"] == generator.fingerprint()
        assert described["resolution"] == generator.resolution

    def test_bad_space_named(self, generator):
        from latentdirs.errors import UnknownNameError

        with pytest.raises(UnknownNameError, match="space: got 'nope'"):
            generator.sample(1, seed=0, space="nope")
