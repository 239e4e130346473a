"""The latents file (latentdirs.latent_file): round trips, generator checks, space conversion, and hostile
files — wrong JSON types in every header field, truncation, shapes that disagree, NaNs, huge sizes."""

from __future__ import annotations

import json
import math
import os
import struct

import pytest
import torch

import latentdirs
from latentdirs import latent_file
from latentdirs.errors import FingerprintMismatchError, InvalidValueError, LatentDirsError
from latentdirs.latent_file import Latents, LatentsFileError, read_header


def _faces_latents(faces, **extra) -> Latents:
    z = faces.sample_seeds([0, 1, 2])
    rows = [{"metrics": {"psnr": 21.5 + k, "ms_ssim": 0.5}, "steps": 300} for k in range(3)]
    return Latents.create(z, generator=faces, space="z", labels=["ann", "bo", "cy"], rows=rows, **extra)


def _raw_file(path, meta, tensor_bytes: bytes, *, shape=None, dtype="F32", offsets=None) -> None:
    """A safetensors file written by hand, so every part of it can be made wrong."""
    shape = meta.get("shape") if shape is None else shape
    offsets = [0, len(tensor_bytes)] if offsets is None else offsets
    table = {"latents": {"dtype": dtype, "shape": shape, "data_offsets": offsets},
             "__metadata__": {"latentdirs": json.dumps(meta)}}
    header = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + tensor_bytes)


def _tensor_bytes(latents: Latents) -> bytes:
    return latents.tensor.numpy().tobytes()


# ---------------------------------------------------------------------------------------------- round trips
def test_round_trip_keeps_everything(faces, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    latents = _faces_latents(faces, inversion={"steps": 300, "loss": "mse"})
    path = latents.save(tmp_path / "photos.safetensors")
    assert latents.path == path and len(latents.sha256) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "written atomically, nothing left over"
    loaded = Latents.load(path, generator=faces)
    assert torch.equal(loaded.tensor, latents.tensor) and loaded.meta == latents.meta
    assert loaded.sha256 == latents.sha256 and loaded.labels == ["ann", "bo", "cy"]
    meta = read_header(path)
    assert meta["schema"] == "latentdirs.latents" and meta["schema_version"] == 1
    assert meta["created"] == "2023-11-14T22:13:20+00:00", "SOURCE_DATE_EPOCH makes files reproducible"
    assert meta["generator"] == faces.describe() and meta["space"] == "z" and meta["shape"] == [3, 100]
    assert meta["rows"][1]["metrics"]["psnr"] == 22.5 and meta["classes"] is None and meta["truncation"] is None
    again = _faces_latents(faces, inversion={"steps": 300, "loss": "mse"})
    assert again.to_bytes() == latents.to_bytes(), "same inputs and SOURCE_DATE_EPOCH: same bytes"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidValueError, match="SOURCE_DATE_EPOCH: got 'yesterday'"):
        _faces_latents(faces)


def test_classes_and_layered_latents(eyes, faces, synthetic, tmp_path):
    z = eyes.sample_seeds([3, 4])
    latents = Latents.create(z, generator=eyes, space="z", labels=["l", "r"], classes=["hazel", 2])
    assert latents.classes == [eyes.class_names.index("hazel"), 2]
    assert Latents.load(latents.save(tmp_path / "eyes.safetensors"), generator=eyes).classes == latents.classes
    with pytest.raises(LatentsFileError, match="classes: got \\[6, 2\\]; allowed: none: 'dcgan-faces' is uncond"):
        Latents.load(tmp_path / "eyes.safetensors", generator=faces, strict=False)
    w_plus = torch.randn(2, 4, 8)  # a layered space, [N, L, D] (StyleGAN2 w+ shaped)
    layered = Latents(w_plus, meta={"space": "w+", "labels": ["a", "b"]})
    loaded = Latents.load(layered.save(tmp_path / "wplus.safetensors"))
    assert loaded.shape == (2, 4, 8) and torch.equal(loaded.tensor, w_plus) and loaded.space == "w+"
    with pytest.raises(LatentsFileError, match="space 'w\\+'\"; allowed: a space of 'dcgan-faces': z"):
        loaded.check_generator(faces, strict=False)
    with pytest.raises(InvalidValueError, match="unconditional"):
        Latents.create(z, generator=faces, space="z", classes=[0, 1])
    with pytest.raises(InvalidValueError, match=r"latents: got 'shape \(2, 100\)'; allowed: \(2, 16\)"):
        Latents.create(z, generator=synthetic, space="z")


def test_other_weights_are_refused_unless_allowed(faces, eyes, synthetic, tmp_path):
    path = _faces_latents(faces).save(tmp_path / "faces.safetensors")
    with pytest.raises(FingerprintMismatchError, match="allow-other-generator"):
        Latents.load(path, generator=eyes)
    Latents.load(path, generator=eyes, strict=False)  # same z shape: allowed explicitly
    with pytest.raises(LatentsFileError, match="shape \\(3, 100\\)'; allowed: \\(3, 16\\)"):
        Latents.load(path, generator=synthetic, strict=False)


# ---------------------------------------------------------------------------------------------- hostile files
def _meta(faces) -> dict:
    return json.loads(json.dumps(_faces_latents(faces).meta))


BAD_FIELDS = [
    ("schema", 3, "has schema 3"), ("schema_version", "1", "schema_version: got '1'"),
    ("schema_version", 1.0, "schema_version: got 1.0"), ("schema_version", True, "schema_version: got True"),
    ("schema_version", 0, "schema_version: got 0"), ("library_version", 1, "library_version: got 1"),
    ("created", 5, "created: got 5"), ("generator", [], "generator: got \\[\\]"),
    ("generator.spec", 5, "generator.spec: got 5"), ("generator.fingerprint", 1, "generator.fingerprint: got 1"),
    ("generator.options", "x", "generator.options: got 'x'"), ("generator.classes", "abc", "generator.classes"),
    ("space", "", "space: got ''"), ("space", 3, "space: got 3"), ("space", None, "space: got None"),
    ("shape", "3,100", "shape: got '3,100'"), ("shape", [3], "shape: got \\[3\\]"),
    ("shape", [3, 100, 1, 1], "shape: got"), ("shape", [3, -1], "shape: got"), ("shape", [True, 100], "shape: got"),
    ("shape", [3.0, 100], "shape: got"), ("truncation", 0, "truncation: got 0"), ("truncation", 1.5, "truncation"),
    ("truncation", "0.7", "truncation: got '0.7'"), ("truncation", True, "truncation: got True"),
    ("classes", [0, 1], "classes: got \\[0, 1\\]"), ("classes", ["a", "b", "c"], "classes"),
    ("classes", [-1, 0, 0], "classes"), ("classes", "0", "classes: got '0'"),
    ("labels", "abc", "labels: got 'abc'"), ("labels", ["a", "b"], "labels"), ("labels", ["a", "", "c"], "labels"),
    ("labels", ["a", 1, "c"], "labels"), ("labels", ["a", "b", "x" * 201], "labels"),
    ("rows", {}, "rows: got"), ("rows", [1, 2, 3], "rows"), ("rows", [{}, {}], "rows"),
    ("inversion", [], "inversion: got \\[\\]"), ("inversion", "x", "inversion"),
    ("converted_from", 7, "converted_from: got 7"),
]


@pytest.mark.parametrize("key, value, message", BAD_FIELDS, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_FIELDS])
def test_wrong_json_types_in_every_header_field(faces, tmp_path, key, value, message):
    meta = _meta(faces)
    tensor = _tensor_bytes(_faces_latents(faces))
    if "." in key:
        outer, inner = key.split(".")
        meta[outer][inner] = value
    else:
        meta[key] = value
    path = tmp_path / "bad.safetensors"
    _raw_file(path, meta, tensor, shape=[3, 100])
    with pytest.raises(LatentsFileError, match=message) as caught:
        Latents.load(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(LatentsFileError):
        read_header(path)


def test_missing_and_foreign_headers(faces, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"latents": torch.zeros(3, 100)}, str(plain))
    with pytest.raises(LatentsFileError, match="without a latentdirs latents header"):
        Latents.load(plain)
    directions = latentdirs.discover(faces, "sefa", num_directions=2).save(tmp_path / "dirs.safetensors")
    with pytest.raises(LatentsFileError, match="schema 'latentdirs.directions'.*give it as DIRECTIONS"):
        Latents.load(directions)
    newer = _meta(faces)
    newer["schema_version"] = latent_file.SCHEMA_VERSION + 1
    _raw_file(tmp_path / "new.safetensors", newer, _tensor_bytes(_faces_latents(faces)))
    with pytest.raises(LatentsFileError, match=f"schema v{latent_file.SCHEMA_VERSION + 1}, newer .* upgrade: "
                                               "pip install --upgrade latentdirs"):
        Latents.load(tmp_path / "new.safetensors")
    with pytest.raises(LatentsFileError, match="no file at"):
        Latents.load(tmp_path / "absent.safetensors")
    with pytest.raises(LatentsFileError, match="not a regular file"):
        Latents.load(tmp_path)


def test_truncated_and_inconsistent_files(faces, tmp_path):
    good = _faces_latents(faces).save(tmp_path / "good.safetensors")
    data = good.read_bytes()
    cases = {
        "short.safetensors": (data[:5], "shorter than a safetensors header"),
        "cut-header.safetensors": (data[:60], "header declares"),
        "cut-tensor.safetensors": (data[:-16], "truncated|not a readable"),
        "garbage.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{not json at all", "not a readable"),
        "huge-header.safetensors": (struct.pack("<Q", 2**40) + data[8:], "declares 1,099,511,627,776 bytes"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LatentsFileError, match=message):
            Latents.load(tmp_path / name)
    meta, tensor = _meta(faces), _tensor_bytes(_faces_latents(faces))
    _raw_file(tmp_path / "disagree.safetensors", meta, tensor[: 2 * 400], shape=[2, 100])
    with pytest.raises(LatentsFileError, match="shape \\[2, 100\\] but its header says \\[3, 100\\]"):
        Latents.load(tmp_path / "disagree.safetensors")
    _raw_file(tmp_path / "f64.safetensors", meta, tensor * 2, dtype="F64")
    with pytest.raises(LatentsFileError, match="tensor dtype: got 'F64'; allowed: F32"):
        Latents.load(tmp_path / "f64.safetensors")
    _raw_file(tmp_path / "offsets.safetensors", meta, tensor, offsets=[0, 8])
    with pytest.raises(LatentsFileError, match="needs 1,200 bytes, but the file gives it 8"):
        Latents.load(tmp_path / "offsets.safetensors")
    _raw_file(tmp_path / "beyond.safetensors", meta, tensor[:100], offsets=[0, 1200])
    with pytest.raises(LatentsFileError, match="truncated or corrupt"):
        Latents.load(tmp_path / "beyond.safetensors")


def test_huge_declared_sizes_are_refused_before_allocating(faces, tmp_path, monkeypatch):
    meta, tensor = _meta(faces), _tensor_bytes(_faces_latents(faces))
    huge = dict(meta, shape=[10**9, 100], labels=meta["labels"], rows=meta["rows"])
    _raw_file(tmp_path / "huge.safetensors", huge, tensor, shape=[10**9, 100], offsets=[0, 4 * 10**11])
    with pytest.raises(LatentsFileError, match="shape: got \\[1000000000, 100\\]; allowed: a tensor of at most"):
        Latents.load(tmp_path / "huge.safetensors")
    counted = dict(meta, shape=[2**20, 100])  # fits the size cap, but labels and rows disagree with N
    _raw_file(tmp_path / "counted.safetensors", counted, tensor, offsets=[0, 4 * 100 * 2**20])
    with pytest.raises(LatentsFileError, match="labels: got"):
        Latents.load(tmp_path / "counted.safetensors")
    path = _faces_latents(faces).save(tmp_path / "fine.safetensors")
    monkeypatch.setattr(latent_file, "MAX_FILE_BYTES", 1000)
    with pytest.raises(LatentsFileError, match="files of at most 0 MiB"):
        Latents.load(path)


def test_non_finite_values_are_refused(faces, tmp_path):
    values = _faces_latents(faces).tensor.clone()
    values[1, 7] = math.nan
    values[2, 0] = math.inf
    _raw_file(tmp_path / "nan.safetensors", _meta(faces), values.numpy().tobytes())
    with pytest.raises(LatentsFileError, match="2 rows with NaN or infinite values"):
        Latents.load(tmp_path / "nan.safetensors")
    with pytest.raises(InvalidValueError, match="finite values only"):
        Latents(values)
    with pytest.raises(InvalidValueError, match="\\[N, D\\] or \\[N, L, D\\]"):
        Latents(torch.zeros(0, 100))


def test_recorded_source_is_validated(faces, tmp_path):
    latents = _faces_latents(faces)
    assert latents.source(0) is None
    meta = _meta(faces)
    meta["rows"][0]["source"] = {"path": "a.png", "absolute": "/a.png", "sha256": "0" * 64, "size": [10, 10],
                                 "crop": [0, 0, 20, 20]}
    _raw_file(tmp_path / "src.safetensors", meta, _tensor_bytes(latents))
    loaded = Latents.load(tmp_path / "src.safetensors")
    with pytest.raises(LatentsFileError, match="rows\\[0\\].source.crop: got \\[0, 0, 20, 20\\]"):
        loaded.source(0)
    assert isinstance(LatentsFileError("x"), LatentDirsError)
    assert os.fspath(loaded.path).endswith("src.safetensors")
