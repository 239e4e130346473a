"""The amortised encoder (latentdirs.encoder): it learns, it is repeatable and resumable bit for bit, its
file round-trips and refuses other weights and hostile headers, the shipped dcgan-faces encoder
reaches its documented quality, and the CLI command trains and writes one."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import latentdirs
from latentdirs.encoder import Encoder, EncoderError, augment_images, heldout_metrics, train_encoder
from latentdirs.errors import FingerprintMismatchError, LatentDirsError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "dcgan-faces-encoder.safetensors"
#: docs/inversion.md "Amortised encoder": mean PSNR of G(E(G(z))) vs G(z) on seeds 0-7, and the tolerance
SHIPPED_PSNR_SEEDS_0_7 = 21.4
SHIPPED_PSNR_TOLERANCE = 0.5
#: a tiny recipe that runs in about two seconds on one CPU thread
TINY = dict(steps=100, batch_size=16, lr=3e-3, base_channels=8, max_channels=32, recon_weight=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise comparisons below assume one fixed thread count
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(synthetic):
    return train_encoder(synthetic, **TINY)


def _factor_error(generator, encoder, seeds) -> float:
    """Mean squared error of the *identifiable* latent part: the 5 factor values a_f·z (prior variance 1).

    The other 11 of synthetic's 16 coordinates change nothing in the image, so no encoder can recover them.
    """
    z = generator.sample_seeds(seeds)
    with torch.no_grad():
        images = generator.synthesize(z)
    values = generator.network.factor_values
    return float(((values(encoder(images)) - values(z)) ** 2).mean())


def test_training_clearly_reduces_the_latent_error(synthetic, tiny):
    seeds = list(range(64))
    assert _factor_error(synthetic, tiny, seeds) < 0.5  # below half the prior variance of every factor
    untrained = train_encoder(synthetic, **{**TINY, "steps": 1})
    assert _factor_error(synthetic, untrained, seeds) > 1.0
    assert tiny.meta["metrics"]["psnr_db"] > untrained.meta["metrics"]["psnr_db"] + 5


def test_prediction_shapes_device_and_input_checks(synthetic, tiny):
    images = synthetic.synthesize(synthetic.sample(3, seed=1)).detach()
    latents = tiny(images)
    assert latents.shape == (3, 16) and latents.dtype == torch.float32 and not latents.requires_grad
    assert tiny(images[:0]).shape == (0, 16)
    for bad in (images[:, :1], images[..., :32], torch.full_like(images, float("nan")), "x"):
        with pytest.raises(LatentDirsError) as error:
            tiny(bad)
        assert "\n" not in str(error.value) and str(error.value).startswith("images")
    with pytest.raises(LatentDirsError, match="unconditional"):
        tiny.predict_classes(images)


def test_augmentation_is_light_seeded_and_shape_preserving(synthetic):
    images = synthetic.synthesize(synthetic.sample(4, seed=2)).detach()
    first = augment_images(images, torch.Generator().manual_seed(5))
    again = augment_images(images, torch.Generator().manual_seed(5))
    assert first.shape == images.shape and torch.equal(first, again)
    assert 0 < float((first - images).abs().mean()) < 0.15


def test_save_load_round_trip_is_byte_identical(synthetic, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")

    encoder = train_encoder(synthetic, **{**TINY, "steps": 3})
    assert encoder.meta["created"] == "2026-01-01T00:00:00+00:00"
    first = encoder.save(tmp_path / "a.safetensors").read_bytes()
    again = train_encoder(synthetic, **{**TINY, "steps": 3}).save(tmp_path / "b.safetensors").read_bytes()
    assert first == again  # same seed and options: the same file
    loaded = Encoder.load(tmp_path / "a.safetensors", generator=synthetic)
    assert loaded.save(tmp_path / "c.safetensors").read_bytes() == first
    images = synthetic.synthesize(synthetic.sample(4, seed=3)).detach()
    assert torch.equal(loaded(images), encoder(images))
    header = loaded.meta
    assert header["schema"] == "latentdirs.encoder" and header["schema_version"] == 1
    assert header["generator"]["fingerprint"] == synthetic.fingerprint() and header["space"] == "z"
    assert header["training"]["steps"] == 3 and header["seed"] == 0 and "psnr_db" in header["metrics"]
    # half precision storage: about half the size, and it round-trips byte for byte too
    half = encoder.save(tmp_path / "h.safetensors", dtype="float16").read_bytes()
    assert len(half) < 0.7 * len(first)
    assert Encoder.load(tmp_path / "h.safetensors", generator=synthetic).to_bytes() == half


def test_refused_on_other_weights(synthetic, tiny, tmp_path, faces):
    path = tiny.save(tmp_path / "enc.safetensors")
    other = latentdirs.load_generator("synthetic", device="cpu")  # a fresh copy: the session one stays intact
    with torch.no_grad():
        other.network.code.weight.mul_(1.001)
    other._fingerprint = None
    with pytest.raises(FingerprintMismatchError, match="fingerprint") as error:
        Encoder.load(path, generator=other)
    assert "\n" not in str(error.value)
    assert Encoder.load(path, generator=other, strict=False).space.dim == 16  # explicitly allowed
    with pytest.raises(FingerprintMismatchError):
        Encoder.load(path, generator=faces)
    with pytest.raises(EncoderError, match="latent_shape"):  # allowed weights, but not the shapes
        Encoder.load(path, generator=faces, strict=False)


def test_resume_equals_an_uninterrupted_run_bit_for_bit(synthetic, tmp_path):
    recipe = {**TINY, "steps": 6, "recon_weight": 10.0, "checkpoint_every": 3}
    whole = train_encoder(synthetic, **recipe)

    class Stop(Exception):
        pass

    def stop_at_four(step, total, loss):
        if step == 4:
            raise Stop

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(Stop):
        train_encoder(synthetic, **recipe, checkpoint=checkpoint, progress=stop_at_four)
    seen = []
    resumed = train_encoder(synthetic, **recipe, checkpoint=checkpoint, resume=True,
                            progress=lambda step, total, loss: seen.append(step))
    assert seen == [4, 5, 6]
    for (name, a), (_, b) in zip(whole.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert resumed.meta["training"]["final_loss"] == whole.meta["training"]["final_loss"]
    with pytest.raises(EncoderError, match="lr"):  # another recipe is refused, naming what differs
        train_encoder(synthetic, **{**recipe, "lr": 1e-2}, checkpoint=checkpoint, resume=True)
    with pytest.raises(LatentDirsError, match="resume"):
        train_encoder(synthetic, **recipe, resume=True)


def _write(path: Path, meta, tensors: dict[str, torch.Tensor] | None = None, raw_meta: str | None = None) -> Path:
    from safetensors.torch import save

    text = raw_meta if raw_meta is not None else json.dumps(meta)
    path.write_bytes(save(tensors or {"x": torch.zeros(1)}, metadata={"latentdirs": text}))
    return path


def _tensors(encoder: Encoder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(encoder.to_bytes())


HOSTILE_META = [
    ({"schema": "latentdirs.directions"}, "schema"),
    ({"schema_version": 2}, "schema_version"),
    ({"schema_version": "1"}, "schema_version"),
    ({"schema_version": True}, "schema_version"),
    ({"seed": "0"}, "seed"),
    ({"seed": -1}, "seed"),
    ({"space": 7}, "space"),
    ({"storage_dtype": "int8"}, "storage_dtype"),
    ({"latent_shape": [1]}, "latent_shape"),
    ({"classes": [1, 2]}, "classes"),
    ({"metrics": {"psnr_db": {"a": 1}}}, "metrics"),
    ({"metrics": []}, "metrics"),
    ({"generator": "dcgan-faces"}, "generator"),
    ({"generator": {"spec": "synthetic"}}, "generator.fingerprint"),
    ({"architecture": {"kind": "pickle"}}, "architecture.kind"),
    ({"architecture": {"kind": "conv4x4-groupnorm", "resolution": 64, "out_features": 16, "num_classes": 0,
                       "base_channels": -8, "max_channels": 32}}, "architecture.base_channels"),
    ({"architecture": {"kind": "conv4x4-groupnorm", "resolution": 64, "out_features": 17, "num_classes": 0,
                       "base_channels": 8, "max_channels": 32}}, "architecture"),
]


@pytest.mark.parametrize("change, named", HOSTILE_META)
def test_hostile_headers_are_refused_in_one_line(synthetic, tiny, tmp_path, change, named):
    meta = {**tiny.meta, **change}
    if "generator" in change and isinstance(change["generator"], dict):
        meta["generator"] = {**tiny.meta["generator"], **change["generator"], "fingerprint": None}
    path = _write(tmp_path / "bad.safetensors", meta, _tensors(tiny))
    with pytest.raises(EncoderError) as error:
        Encoder.load(path, generator=synthetic)
    message = str(error.value)
    assert "\n" not in message and named in message and "got" in message


def test_hostile_files_and_tensors_are_refused(synthetic, tiny, tmp_path):
    tensors = _tensors(tiny)
    cases = {
        "missing": tmp_path / "nothing.safetensors",
        "folder": tmp_path,
        "short": tmp_path / "short.safetensors",
        "huge-header": tmp_path / "huge.safetensors",
        "not-json": _write(tmp_path / "notjson.safetensors", None, tensors, raw_meta="{not json"),
        "no-header": tmp_path / "plain.safetensors",
        "array": _write(tmp_path / "array.safetensors", None, tensors, raw_meta="[1, 2]"),
        "deep": _write(tmp_path / "deep.safetensors", None, tensors, raw_meta="[" * 100_000 + "]" * 100_000),
    }
    cases["short"].write_bytes(b"\x01\x02")
    cases["huge-header"].write_bytes(struct.pack("<Q", 2**40) + b"{}")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(cases["no-header"]))
    wrong_shape = {**tensors, "net.latent.weight": torch.zeros(3, 3)}
    cases["shape"] = _write(tmp_path / "shape.safetensors", tiny.meta, wrong_shape)
    cases["extra"] = _write(tmp_path / "extra.safetensors", tiny.meta, {**tensors, "net.evil": torch.zeros(1)})
    nan = {**tensors, "latent_mean": torch.full_like(tensors["latent_mean"], float("nan"))}
    cases["nan"] = _write(tmp_path / "nan.safetensors", tiny.meta, nan)
    cases["dtype"] = _write(tmp_path / "dtype.safetensors", tiny.meta,
                            {k: v.double() if k.startswith("net.") else v for k, v in tensors.items()})
    data = bytearray(tiny.to_bytes())
    cases["truncated"] = tmp_path / "truncated.safetensors"
    cases["truncated"].write_bytes(bytes(data[:-100]))
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as handle:  # sparse: the size check must refuse it before reading anything
        handle.truncate(600 * 2**20)
    cases["big"] = big
    for name, path in cases.items():
        with pytest.raises(EncoderError) as error:
            Encoder.load(path, generator=synthetic)
        assert "\n" not in str(error.value), name


def test_conditional_generator_predicts_classes(tmp_path_factory):
    from tests.biggan_tiny import write_biggan_dir

    biggan = latentdirs.load_generator(f"biggan:{write_biggan_dir(tmp_path_factory.mktemp('biggan'))}", device="cpu")
    encoder = train_encoder(biggan, steps=2, batch_size=4, base_channels=4, max_channels=8)
    images = biggan.synthesize(biggan.sample(3, seed=0), classes=[1, 2, 3]).detach()
    assert encoder(images).shape == (3, biggan.z_dim)
    probabilities = encoder.class_probabilities(images)
    assert probabilities.shape == (3, biggan.num_classes)
    assert torch.allclose(probabilities.sum(1), torch.ones(3))
    assert encoder.predict_classes(images).dtype == torch.long
    assert 0.0 <= encoder.meta["metrics"]["class_accuracy"] <= 1.0
    path = encoder.save(tmp_path_factory.mktemp("enc") / "biggan.safetensors")
    assert torch.equal(Encoder.load(path, generator=biggan).predict_classes(images), encoder.predict_classes(images))


def test_stylegan2_w_plus_predicts_every_layer(tmp_path_factory):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    file = write_nvlabs_pickle(random_network(tiny_config()), tmp_path_factory.mktemp("sg2") / "g.pkl")
    stylegan = latentdirs.load_generator(f"stylegan2:{file}", device="cpu")
    space = stylegan.space("w+")
    encoder = train_encoder(stylegan, space="w+", steps=2, batch_size=4, base_channels=4, max_channels=8)
    images = stylegan.synthesize(stylegan.sample(2, seed=0, space="w+"), space="w+").detach()
    assert encoder(images).shape == (2, space.num_layers, space.dim)
    # the standardisation is w's own: w is not N(0, I), and w+ repeats w on every layer
    assert encoder.latent_std.shape == (space.num_layers * space.dim,)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped encoder is not built yet")
def test_shipped_faces_encoder_reaches_its_documented_psnr(faces, eyes):
    encoder = Encoder.load(SHIPPED, generator=faces)
    assert SHIPPED.stat().st_size <= 4 * 2**20 and encoder.meta["storage_dtype"] == "float16"
    psnr = heldout_metrics(encoder, seeds=list(range(8)))["psnr_db"]
    assert abs(psnr - SHIPPED_PSNR_SEEDS_0_7) < SHIPPED_PSNR_TOLERANCE, psnr
    with pytest.raises(FingerprintMismatchError):
        Encoder.load(SHIPPED, generator=eyes)


def _group():
    """The real ``latentdirs`` group once the command is registered; until then a group of the same class."""
    from latentdirs.cli.main import _Group, cli
    from latentdirs.cli.train_encoder import train_encoder_command

    return cli if "train-encoder" in cli.commands else _Group("latentdirs", commands=[train_encoder_command])


def test_cli_trains_and_writes_an_encoder(cli_runner, synthetic, tmp_path):
    out = tmp_path / "enc.safetensors"
    result = cli_runner.invoke(_group(), ["train-encoder", "synthetic", "--steps", "3", "--batch-size", "4",
                                          "--device", "cpu", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "PSNR" in result.stdout
    encoder = Encoder.load(out, generator=synthetic)
    assert encoder.meta["training"]["steps"] == 3 and encoder.meta["training"]["batch_size"] == 4


def test_cli_refuses_bad_outputs_before_training(cli_runner, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    checkpoint.write_bytes(b"")
    cases = [
        ["-o", str(checkpoint), "--checkpoint", str(checkpoint)],  # the output would overwrite an input
        ["-o", str(tmp_path / "file.txt" / "enc.safetensors")],     # parent is not a directory
        ["-o", str(tmp_path / "enc.safetensors"), "--resume"],       # resume without a checkpoint
    ]
    (tmp_path / "file.txt").write_text("x")
    for arguments in cases:
        result = cli_runner.invoke(_group(), ["train-encoder", "synthetic", "--steps", "100000", "--device", "cpu",
                                              *arguments], catch_exceptions=False)
        assert result.exit_code == 1, (arguments, result.output)
        assert result.stderr.startswith("Error:") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "enc.safetensors").exists()
