"""The feature offset (issue 13): an offset after dcgan-faces' affine first layer, optimised by the one
inversion core, stored in latents files (schema v2) and rendered by every edit — on the real weights."""

from __future__ import annotations

import json
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentdirs
from latentdirs.errors import InvalidValueError, NotSupportedError
from latentdirs.images import to_uint8
from latentdirs.inversion import Inversion, Schedule, space_model
from latentdirs.invert import invert_tensors, inversion_options
from latentdirs.latent_file import Latents, LatentsFileError, read_header
from latentdirs.losses import mse
from latentdirs.photos import prepare_images
from tests.conftest import invoke

DATA = Path(__file__).resolve().parent / "data"
FACES_SEFA = Path(str(resources.files("latentdirs.checkpoints") / "dcgan-faces-sefa.safetensors"))
FACE_BOX = "72,10,84,84"


def _offsets(faces, count: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(count, *faces.feature_offset_shape, generator=torch.Generator().manual_seed(seed))


def _manual(faces, z: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``rest(first(z) + r)`` spelled out on the BatchNorm-folded Sequential."""
    net = faces._inference
    with torch.no_grad():
        return net[1:](net[0](z[:, :, None, None]) + offsets)


def _photo_latents(faces, count: int = 2) -> Latents:
    z = faces.sample_seeds(list(range(count)))
    return Latents.create(z, generator=faces, space="z", labels=[f"p{k}" for k in range(count)],
                          offsets=_offsets(faces, count))


# ---------------------------------------------------------------------------------------------- the hook
def test_offset_shapes_and_refusals(faces, eyes, synthetic):
    assert faces.feature_offset_shape == (512, 4, 4) and eyes.feature_offset_shape == (1024, 4, 4)
    assert synthetic.feature_offset_shape is None
    z = faces.sample(2, seed=3)
    with torch.no_grad():
        assert torch.equal(faces.synthesize(z, offsets=torch.zeros(2, 512, 4, 4)), faces.synthesize(z))
        # the conditional net: the class enters the first layer, the offset is added to its output
        eye = eyes.synthesize(eyes.sample(1, seed=0), classes=[6], offsets=torch.zeros(1, 1024, 4, 4))
        assert torch.equal(eye, eyes.synthesize(eyes.sample(1, seed=0), classes=[6]))
    with pytest.raises(InvalidValueError, match=r"offsets: got 'shape \(2, 512, 2, 2\)'") as caught:
        faces.synthesize(z, offsets=torch.zeros(2, 512, 2, 2))
    assert "\n" not in str(caught.value)
    with pytest.raises(NotSupportedError, match="feature offsets exist in z of DCGAN") as refused:
        synthetic.synthesize(synthetic.sample(1, seed=0), offsets=torch.zeros(1, 8))
    assert "\n" not in str(refused.value)
    with pytest.raises(InvalidValueError, match="feature_offset: got True"):
        inversion_options(synthetic, feature_offset=True)
    assert inversion_options(faces)[0].feature_offset and not inversion_options(synthetic)[0].feature_offset


def test_an_edit_with_an_offset_is_exact(faces):
    """G(z + αd; r) = rest(first(z + αd) + r): every z direction acts on an offset row as on G(z)."""
    directions = latentdirs.Directions.load(FACES_SEFA, generator=faces)
    latents = _photo_latents(faces)
    ours = torch.cat([b.images for b in latentdirs.traverse(faces, directions, rows=latents, indices=[0, 2],
                                                            alphas=[-2.0, 0.0, 1.5])])
    expected = []
    for index in (0, 2):
        for row in range(2):
            for alpha in (-2.0, 0.0, 1.5):
                moved = latents.tensor[row:row + 1] + alpha * directions.vectors[index]
                expected.append(_manual(faces, moved, latents.offsets[row:row + 1]))
    assert torch.allclose(ours, torch.cat(expected), atol=1e-5)
    # the offset matters: the same rows without it render other images
    plain = torch.cat([b.images for b in latentdirs.traverse(faces, directions, seeds=[0, 1], indices=[0, 2],
                                                             alphas=[-2.0, 0.0, 1.5])])
    assert (ours - plain).abs().mean() > 0.01


# ---------------------------------------------------------------------------------------------- the core
def test_offsets_join_the_same_loop_late_and_follow_keep(faces):
    model = space_model(faces, "z")
    with torch.no_grad():
        targets = faces.synthesize(faces.sample_seeds([7, 8, 9]))
    start = faces.sample_seeds([10, 11, 12])
    run = Inversion(model.render, start, targets, mse, Schedule(6, 0.05), project=model.project,
                    offsets=torch.zeros(3, *faces.feature_offset_shape), offset_from=3, offset_lr=0.01,
                    offset_penalty=0.1)
    run.run(until=3)
    assert not run.offsets.abs().any(), "before offset_from the offsets are constants"
    moved_z = run.latents.detach().clone()
    run.keep(torch.tensor([2, 0]))
    assert torch.equal(run.latents.detach(), moved_z[[2, 0]]) and run.offsets.shape == (2, 512, 4, 4)
    run.run()
    assert run.offsets.abs().max() > 0 and run.offsets.abs().max() < 0.1, "lr 0.01 for 3 steps"
    assert torch.allclose(run.images(), _manual(faces, run.latents.detach(), run.offsets.detach()), atol=1e-5)


@pytest.fixture(scope="module")
def photo():
    return prepare_images([DATA / "astronaut.jpg"], 64, crop=FACE_BOX).images


def test_inversion_with_the_offset_beats_its_own_z_and_records_it(faces, photo):
    result = invert_tensors(faces, photo, steps=10, start_candidates=8, starts=1, loss="mse")
    assert result.offsets is not None and result.offsets.shape == (1, 512, 4, 4)
    with torch.no_grad():
        again = faces.synthesize(result.latents, offsets=result.offsets).clamp(-1, 1)
    assert torch.allclose(again, result.reconstructions, atol=1e-5), "metrics are of the re-render with offsets"
    assert float(result.psnr) > float(result.psnr_without_offset) + 0.1
    metrics = result.row(0)
    assert metrics["psnr_without_offset"] == round(float(result.psnr_without_offset), 3) and metrics["offset_rms"] > 0
    plain = invert_tensors(faces, photo, steps=2, start_candidates=8, starts=1, loss="mse", feature_offset=False)
    assert plain.offsets is None and plain.psnr_without_offset is None and "offset_rms" not in plain.row(0)


# ---------------------------------------------------------------------------------------------- the file
def test_file_round_trip_is_v2_with_offsets_and_v1_without(faces, tmp_path):
    latents = _photo_latents(faces)
    path = latents.save(tmp_path / "me.safetensors")
    header = read_header(path)
    assert header["schema_version"] == 2 and header["offsets"] == [2, 512, 4, 4]
    loaded = Latents.load(path, generator=faces)
    assert torch.equal(loaded.offsets, latents.offsets) and loaded.meta == latents.meta
    assert loaded.to_bytes() == path.read_bytes()
    plain = Latents.create(latents.tensor, generator=faces, space="z").save(tmp_path / "plain.safetensors")
    assert read_header(plain)["schema_version"] == 1 and "offsets" not in read_header(plain)
    assert Latents.load(plain, generator=faces).offsets is None
    with pytest.raises(NotSupportedError, match="an offset exists only in z of a DCGAN"):
        loaded.to_space(faces, "w")
    assert loaded.to_space(faces, "z") is loaded


def test_offsets_are_refused_on_another_generator(faces, eyes, tmp_path):
    path = _photo_latents(faces).save(tmp_path / "me.safetensors")
    with pytest.raises(LatentsFileError, match=r"offsets: got 'shape \(2, 512, 4, 4\)'; allowed: \(2, 1024, 4, 4\)"):
        Latents.load(path, generator=eyes, strict=False)
    with pytest.raises(InvalidValueError, match="offsets"):
        Latents.create(faces.sample(2, seed=0), generator=faces, space="z", offsets=torch.zeros(2, 3, 4, 4))


def _raw(path: Path, meta: dict, latents: torch.Tensor, offsets: torch.Tensor | None, *,
         offsets_entry: dict | None = None) -> None:
    """A safetensors file written by hand: a ``latents`` and an optional ``offsets`` entry."""
    body = latents.numpy().tobytes()
    table = {"latents": {"dtype": "F32", "shape": list(latents.shape), "data_offsets": [0, len(body)]},
             "__metadata__": {"latentdirs": json.dumps(meta)}}
    if offsets is not None:
        extra = offsets.numpy().tobytes()
        table["offsets"] = offsets_entry or {"dtype": "F32", "shape": list(offsets.shape),
                                             "data_offsets": [len(body), len(body) + len(extra)]}
        body += extra
    header = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


HOSTILE = [
    ("offsets in a v1 header", {"schema_version": 1}, None, "null in a schema v1 file"),
    ("a newer schema", {"schema_version": 3}, None, "schema v3, newer .* upgrade"),
    ("a 3-d offsets shape", {"offsets": [2, 512, 16]}, None, "offsets: got"),
    ("offsets for other rows", {"offsets": [5, 512, 4, 4]}, None, "offsets: got"),
    ("a huge declared offsets tensor", {"offsets": [2, 2**30, 4, 4]}, None, "MiB together"),
    ("a boolean in the shape", {"offsets": [2, True, 4, 4]}, None, "offsets: got"),
    ("a tensor of another shape", {}, {"dtype": "F32", "shape": [2, 512, 2, 2], "data_offsets": [800, 1312]},
     "'offsets' tensor of shape"),
    ("float16 offsets", {}, {"dtype": "F16", "shape": [2, 512, 4, 4], "data_offsets": [800, 33568]}, "dtype"),
    ("an extent past the end", {}, {"dtype": "F32", "shape": [2, 512, 4, 4], "data_offsets": [800, 10**9]},
     "needs 65,536 bytes"),
]


@pytest.mark.parametrize("what, change, entry, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_offsets_are_refused_before_allocation(faces, tmp_path, what, change, entry, message):
    latents = _photo_latents(faces)
    meta = {**json.loads(json.dumps(latents.meta)), **change}
    path = tmp_path / "bad.safetensors"
    _raw(path, meta, latents.tensor, latents.offsets, offsets_entry=entry)
    with pytest.raises(LatentsFileError, match=message) as caught:
        Latents.load(path)
    assert "\n" not in str(caught.value)


def test_non_finite_and_undeclared_offsets_are_refused(faces, tmp_path):
    latents = _photo_latents(faces)
    meta = json.loads(json.dumps(latents.meta))
    bad = latents.offsets.clone()
    bad[1, 3, 0, 0] = float("nan")
    _raw(tmp_path / "nan.safetensors", meta, latents.tensor, bad)
    with pytest.raises(LatentsFileError, match="offsets: got '1 rows with NaN"):
        Latents.load(tmp_path / "nan.safetensors")
    undeclared = {k: v for k, v in meta.items() if k != "offsets"} | {"schema_version": 1}
    _raw(tmp_path / "undeclared.safetensors", undeclared, latents.tensor, latents.offsets)
    with pytest.raises(LatentsFileError, match="does not declare"):
        Latents.load(tmp_path / "undeclared.safetensors")


# ---------------------------------------------------------------------------------------------- CLI
def _best_window_error(picture: np.ndarray, tile: np.ndarray) -> float:
    """The smallest mean squared error (uint8 units) of ``tile [h, w, 3]`` against any window of ``picture``."""
    windows = np.lib.stride_tricks.sliding_window_view(picture, tile.shape)[:, :, 0]  # [Y, X, h, w, 3], a view
    return min(float(((row - tile) ** 2).mean(axis=(1, 2, 3)).min()) for row in windows)  # one row: a few MB


def test_cli_invert_then_edit_renders_with_the_offsets(faces, cli_runner, tmp_path):
    out = tmp_path / "me.safetensors"
    result = invoke(cli_runner, "invert", DATA / "astronaut.jpg", "--crop", FACE_BOX, "-g", "dcgan-faces",
                    "--steps", "6", "--loss", "mse", "--no-editability", "--json", "--device", "cpu", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["options"]["feature_offset"] is True and "psnr_without_offset" in report["images"][0]
    latents = Latents.load(out, generator=faces)
    assert latents.offsets is not None and latents.meta["schema_version"] == 2
    edit = invoke(cli_runner, "edit", FACES_SEFA, "--latents", out, "--indices", "0", "--alphas", "0",
                  "--device", "cpu", "-o", tmp_path / "edit")
    assert edit.exit_code == 0, edit.output
    manifest = json.loads((tmp_path / "edit" / "manifest.json").read_text())
    assert manifest["rows"]["feature_offsets"] == [1, 512, 4, 4]
    grid = np.asarray(Image.open(tmp_path / "edit" / "grid_d000.png").convert("RGB")).astype(np.float32)
    with_offset = to_uint8(_manual(faces, latents.tensor, latents.offsets))[0].astype(np.float32)
    without = to_uint8(faces.synthesize(latents.tensor).detach())[0].astype(np.float32)
    assert _best_window_error(grid, with_offset) < 1.0, "the alpha-0 tile is the offset reconstruction"
    assert _best_window_error(grid, without) > 20 * _best_window_error(grid, with_offset) + 10
    off = invoke(cli_runner, "invert", DATA / "astronaut.jpg", "--crop", FACE_BOX, "--steps", "2", "--loss", "mse",
                 "--no-feature-offset", "--no-editability", "--device", "cpu", "-o", tmp_path / "plain.safetensors")
    assert off.exit_code == 0, off.output
    assert Latents.load(tmp_path / "plain.safetensors").offsets is None
