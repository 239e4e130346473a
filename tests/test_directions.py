"""The direction file: round trip, validation, fingerprint check, atomic writes, importers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentdirs.directions import SCHEMA_VERSION, Directions, read_header
from latentdirs.errors import DirectionFileError, FingerprintMismatchError, InvalidValueError, OutOfRangeError
from latentdirs.importers import import_directions


@pytest.fixture
def saved(tmp_path, synthetic_sefa):
    path = tmp_path / "synthetic.safetensors"
    synthetic_sefa.save(path)
    return path


def test_round_trip_keeps_everything(saved, synthetic, synthetic_sefa):
    loaded = Directions.load(saved, generator=synthetic)
    assert torch.equal(loaded.vectors, synthetic_sefa.vectors)
    assert torch.equal(loaded.scores, synthetic_sefa.scores)
    assert loaded.meta == json.loads(json.dumps(synthetic_sefa.meta))
    assert loaded.meta["schema_version"] == SCHEMA_VERSION
    assert loaded.meta["generator"]["fingerprint"] == synthetic.fingerprint()
    assert loaded.meta["method"]["name"] == "sefa" and loaded.meta["score_kind"] == "eigenvalue"
    assert read_header(saved) == loaded.meta


def test_labels_persist(saved):
    directions = Directions.load(saved)
    directions.set_label(0, "x position")
    directions.save(saved)
    again = Directions.load(saved)
    assert again.labels == {0: "x position"}
    assert again.label_of(0) == "d0 x position" and again.label_of(1) == "d1"
    with pytest.raises(OutOfRangeError, match="index: got 16; allowed: 0-15"):
        again.set_label(16, "nope")


def test_fingerprint_mismatch_refused_unless_allowed(saved, faces):
    with pytest.raises(FingerprintMismatchError, match="made on 'synthetic'.*allow it explicitly"):
        Directions.load(saved, generator=faces)


def test_other_weights_refused_and_allowed(saved, synthetic):
    from latentdirs.generators.synthetic import SyntheticAdapter

    other = SyntheticAdapter(device="cpu")
    with torch.no_grad():
        other.network.code.weight[0, 0] += 0.5
    with pytest.raises(FingerprintMismatchError):
        Directions.load(saved, generator=other)
    assert len(Directions.load(saved, generator=other, strict=False)) == 16


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 100])
    with pytest.raises(DirectionFileError, match="not a readable safetensors direction file"):
        Directions.load(saved)


def test_not_safetensors(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(DirectionFileError, match="truncated or of another format"):
        Directions.load(path)
    with pytest.raises(DirectionFileError, match="no file at"):
        Directions.load(tmp_path / "missing.safetensors")


def test_newer_schema_asks_for_upgrade(tmp_path, synthetic_sefa):
    meta = dict(synthetic_sefa.meta, schema_version=SCHEMA_VERSION + 1)
    path = tmp_path / "future.safetensors"
    save_file({"directions": synthetic_sefa.vectors}, path, metadata={"latentdirs": json.dumps(meta)})
    with pytest.raises(DirectionFileError, match="schema v2, newer.*pip install --upgrade latentdirs"):
        Directions.load(path)
    with pytest.raises(DirectionFileError, match="newer"):
        read_header(path)


def test_foreign_safetensors_and_shape_mismatch(tmp_path, synthetic_sefa):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DirectionFileError, match="without a latentdirs header"):
        Directions.load(path)
    lying = dict(synthetic_sefa.meta, num_directions=3)
    save_file({"directions": synthetic_sefa.vectors}, path, metadata={"latentdirs": json.dumps(lying)})
    with pytest.raises(DirectionFileError, match=r"holds a \(16, 16\) tensor but its header says \(3, 16\)"):
        Directions.load(path)


def test_rows_must_be_unit():
    with pytest.raises(InvalidValueError, match="vectors: got 'row norms"):
        Directions(torch.ones(2, 3))


def test_failed_save_leaves_nothing(tmp_path, synthetic_sefa, monkeypatch):
    target = tmp_path / "out.safetensors"

    def broken(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Directions, "to_bytes", broken)
    with pytest.raises(RuntimeError):
        synthetic_sefa.save(target)
    assert list(tmp_path.iterdir()) == []


def test_import_interfacegan_npy(tmp_path, faces):
    boundary = np.random.default_rng(0).normal(size=(1, 100))
    np.save(tmp_path / "boundary.npy", boundary)
    directions = import_directions(tmp_path / "boundary.npy", faces)
    np.testing.assert_allclose(directions.vectors.numpy()[0], boundary[0] / np.linalg.norm(boundary), rtol=1e-5)
    assert directions.meta["method"] == {"name": "import", "options": {"format": "sefa-interfacegan-npy",
                                                                      "source": "boundary.npy"}, "seed": None}
    with pytest.raises(InvalidValueError, match="64-d directions in boundary.npy"):
        np.save(tmp_path / "boundary.npy", boundary[:, :64])
        import_directions(tmp_path / "boundary.npy", faces)


def test_import_ganspace_npz(tmp_path, synthetic):
    rng = np.random.default_rng(1)
    components = np.linalg.qr(rng.normal(size=(16, 4)))[0].T.reshape(4, 1, 16)
    np.savez(tmp_path / "ganspace.npz", lat_comp=components, lat_stdev=np.array([4.0, 3.0, 2.0, 1.0]),
             lat_mean=np.zeros((1, 16)), act_comp=np.zeros((4, 1, 8)))
    directions = import_directions(tmp_path / "ganspace.npz", synthetic)
    np.testing.assert_allclose(directions.vectors.numpy(), components[:, 0], atol=1e-6)
    assert directions.scores.tolist() == [4.0, 3.0, 2.0, 1.0] and directions.meta["score_kind"] == "stdev"


def test_import_refuses_pickles(tmp_path, synthetic):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionFileError, match="obj.npy: the array of dtype object'; allowed: numeric arrays") as caught:
        import_directions(tmp_path / "obj.npy", synthetic)
    assert "unsafe" not in str(caught.value) and "allow_pickle" not in str(caught.value)
