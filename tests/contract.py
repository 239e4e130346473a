"""The shared adapter contract, run over every registered built-in family (tests/test_adapters.py).

:data:`FAMILY_FIXTURES` holds one factory per family: ``factory(request) -> adapter on the CPU``,
loaded through the registry (so ``load_options`` are real). A family registered in
:data:`latentdirs.registry.BUILTIN_GENERATORS` without a factory here fails the suite. A test class
mixing in :class:`AdapterContract` provides a ``generator`` fixture and may set ``batch``.
"""

from __future__ import annotations

import json
from typing import Callable

import pytest
import torch

from latentdirs.generators.base import GeneratorAdapter
from latentdirs.registry import BUILTIN_GENERATORS, generator_from_record, load_generator
from latentdirs.specs import split_generator_spec


def _session_fixture(name: str) -> Callable[[pytest.FixtureRequest], GeneratorAdapter]:
    """The embedded and synthetic generators are loaded once per session (tests/conftest.py)."""
    return lambda request: request.getfixturevalue(name)


def _biggan(request: pytest.FixtureRequest) -> GeneratorAdapter:
    from tests.biggan_tiny import write_biggan_dir

    folder = request.getfixturevalue("tmp_path_factory").mktemp("contract-biggan")
    return load_generator(f"biggan:{write_biggan_dir(folder)}", device="cpu")


def _stylegan2(request: pytest.FixtureRequest) -> GeneratorAdapter:
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    folder = request.getfixturevalue("tmp_path_factory").mktemp("contract-stylegan2")
    path = write_nvlabs_pickle(random_network(tiny_config()), folder / "network.pkl")
    return load_generator(f"stylegan2:{path}", device="cpu", noise_mode="const", truncation_cutoff=4)


def _stylegan3(request: pytest.FixtureRequest) -> GeneratorAdapter:
    from tests.stylegan3_fixtures import load_reference, write_stylegan3_pickle

    folder = request.getfixturevalue("tmp_path_factory").mktemp("contract-stylegan3")
    path = write_stylegan3_pickle(load_reference("t32"), folder / "network.pkl")
    return load_generator(f"stylegan3:{path}", device="cpu", truncation_cutoff=4)


def _module(request: pytest.FixtureRequest) -> GeneratorAdapter:
    return load_generator("module:tests.linear_generator:make", device="cpu", first_layer="fc")


#: family name → factory of a small real adapter of that family (CPU)
FAMILY_FIXTURES: dict[str, Callable[[pytest.FixtureRequest], GeneratorAdapter]] = {
    "dcgan-faces": _session_fixture("faces"),
    "dcgan-eyes": _session_fixture("eyes"),
    "synthetic": _session_fixture("synthetic"),
    "shapes-dcgan": lambda request: load_generator("shapes-dcgan", device="cpu"),
    "shapes-stylegan2": lambda request: load_generator("shapes-stylegan2", device="cpu"),
    "biggan": _biggan,
    "stylegan2": _stylegan2,
    "stylegan3": _stylegan3,
    "module": _module,
}


def registered_families() -> list[str]:
    """The built-in families the registry knows, in its order."""
    return list(BUILTIN_GENERATORS)


def family_adapter(request: pytest.FixtureRequest, family: str) -> GeneratorAdapter:
    """The adapter :data:`FAMILY_FIXTURES` makes for ``family``; fails the test when there is none."""
    factory = FAMILY_FIXTURES.get(family)
    if factory is None:
        pytest.fail(f"family {family!r} is registered but tests/contract.py has no fixture for it: "
                    "add a factory to FAMILY_FIXTURES")
    return factory(request)


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
        described = json.loads(json.dumps(generator.describe()))
        assert described["fingerprint"] == generator.fingerprint()
        assert described["resolution"] == generator.resolution

    def test_load_options_recorded_and_reloaded(self, generator):
        """describe() records the loader options; reloading the record gives the same generator back."""
        record = json.loads(json.dumps(generator.describe()))  # as a direction file stores it
        assert record["options"] == generator.load_options
        family = BUILTIN_GENERATORS[split_generator_spec(record["spec"])[0]]
        # a spec read from a file may not import code: for module: the user passes it (-g)
        trusted = record["spec"] if family.imports_code else None
        reloaded = generator_from_record(record, spec=trusted, device="cpu")
        assert reloaded.load_options == generator.load_options
        assert reloaded.describe() == record
        z = generator.sample(2, seed=5)
        with torch.no_grad():
            assert torch.equal(reloaded.synthesize(z.to(reloaded.device)).cpu(), generator.synthesize(z).cpu())

    def test_declared_hooks_have_their_types(self, generator):
        """The hooks methods and the evaluation read are declared on the base and answer in kind."""
        assert generator.sefa_space(None) in generator.spaces
        truth = generator.true_directions
        assert truth is None or all(v.shape == (generator.space(None).dim,) for v in truth.values())
        assert isinstance(generator.projection_layers, tuple) and generator.projection_layers

    def test_bad_space_named(self, generator):
        from latentdirs.errors import UnknownNameError

        with pytest.raises(UnknownNameError, match="space: got 'nope'"):
            generator.sample(1, seed=0, space="nope")
