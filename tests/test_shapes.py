"""shapes-dcgan: the shipped weights load and render; the training script's step, resume and export work."""

from __future__ import annotations

import pytest
import torch

from latentdirs import scenes
from latentdirs.catalogue import checkpoints_dir
from latentdirs.errors import InvalidValueError
from latentdirs.generators.dcgan import DCGANAdapter
from latentdirs.generators.shapes import ShapesDCGANAdapter, _read_state, load_shapes_dcgan
from training import train_dcgan


@pytest.fixture(scope="module")
def shapes():
    return load_shapes_dcgan(device="cpu")


def test_shipped_weights_are_small_half_precision_safetensors():
    path = checkpoints_dir() / "shapes-dcgan.safetensors"
    assert path.stat().st_size <= 4 * 2**20
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(path)).values() if t.is_floating_point()} == {torch.float16}


def test_loads_as_a_dcgan_family_adapter(shapes):
    assert isinstance(shapes, DCGANAdapter) and shapes.family == "dcgan"
    assert shapes.spec == "shapes-dcgan" and shapes.resolution == 64 and shapes.z_dim == train_dcgan.Z_DIM
    assert shapes.true_directions is None and not shapes.conditional
    assert shapes.fingerprint() == load_shapes_dcgan(device="cpu").fingerprint()


def test_renders_deterministic_images_in_range(shapes):
    images = shapes.synthesize(shapes.sample(8, seed=0))
    again = shapes.synthesize(shapes.sample(8, seed=0))
    other = shapes.synthesize(shapes.sample(8, seed=1))
    assert images.shape == (8, 3, 64, 64) and images.dtype == torch.float32
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_read_factors_sees_one_object_per_generated_image(shapes):
    read = shapes.read_factors(shapes.synthesize(shapes.sample(64, seed=3)))
    assert set(shapes.factor_names) <= set(read)
    assert all(read[name].shape == (64,) for name in shapes.factor_names)
    assert float(read["x"].abs().max()) < 0.5 and float(read["y"].abs().max()) < 0.5
    # the reader is sure of the shape on most generated images: the generator draws recognisable shapes
    assert float(read["shape_probability"].amax(1).mean()) > 0.7
    assert len(set(read["shape"].tolist())) == len(scenes.SHAPES)


def test_an_argument_is_refused():
    with pytest.raises(InvalidValueError, match="'shapes-dcgan' without"):
        load_shapes_dcgan("other.safetensors")


# ------------------------------------------------------------------ the training script
TINY = ["--batch", "4", "--width", "4", "--z-dim", "8", "--grid-every", "0"]


def _weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "state.pt", weights_only=True)["generator"]


def test_three_training_steps_change_the_weights_and_keep_losses_finite():
    torch.manual_seed(0)
    generator, discriminator = train_dcgan.make_generator(8, 4), train_dcgan.make_discriminator(4)
    train_dcgan.initialise(generator)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    optimisers = train_dcgan.make_optimiser(generator), train_dcgan.make_optimiser(discriminator)
    for step in range(3):
        real, _ = scenes.render_scenes(4, seed=step)
        losses = train_dcgan.train_step(generator, discriminator, *optimisers, real, torch.randn(4, 8))
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(before["main.0.weight"], generator.state_dict()["main.0.weight"])


def test_a_resumed_run_continues_the_same_run_and_exports_a_loadable_file(tmp_path):
    train_dcgan.main(["--steps", "2", "--out", str(tmp_path / "resumed"), *TINY])
    train_dcgan.main(["--steps", "3", "--out", str(tmp_path / "resumed"), *TINY])
    train_dcgan.main(["--steps", "3", "--out", str(tmp_path / "straight"), *TINY])
    resumed, straight = _weights(tmp_path / "resumed"), _weights(tmp_path / "straight")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    exported = tmp_path / "tiny.safetensors"
    train_dcgan.main(["--out", str(tmp_path / "straight"), "--export-only", "--export", str(exported), *TINY])
    adapter = ShapesDCGANAdapter(spec="shapes-dcgan", state=_read_state(exported), device="cpu")
    assert adapter.z_dim == 8 and adapter.synthesize(adapter.sample(2, seed=0)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("name, file", [("shapes-dcgan", "shapes-dcgan.safetensors"),
                                        ("shapes-factor-reader", "shapes-factor-reader.safetensors")])
def test_the_catalogue_checksum_matches_the_shipped_file(name, file):
    from latentdirs.catalogue import catalogue
    from latentdirs.weights import sha256_of

    item = catalogue().get(name)
    if item is None:
        pytest.skip(f"checkpoints/catalogue.json does not list {name} yet")
    assert item.file == file and sha256_of(checkpoints_dir() / file) == item.sha256
