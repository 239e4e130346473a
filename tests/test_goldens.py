"""The same command writes the same images: edits compared byte for byte with goldens that the code
before the edit-plan restructuring wrote (tests/goldens/make_goldens.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.goldens.make_goldens import CALIBRATED_ARGS, DEMO_ARGS, HERE, render

#: manifest fields the restructuring must keep exactly (paths and the command line may differ)
KEPT_FIELDS = ("schema", "schema_version", "seeds", "indices", "alphas", "amounts", "calibration", "classes",
               "truncation")
KEPT_IMAGE_FIELDS = ("file", "kind", "index", "seed", "class", "alphas", "amounts")


def _faces_file() -> Path:
    from importlib import resources

    return Path(str(resources.files("latentdirs.checkpoints") / "dcgan-faces-sefa.safetensors"))


@pytest.mark.parametrize("name", ["demo", "calibrated"])
def test_edit_matches_golden(name, tmp_path):
    directions, extra = ((_faces_file(), DEMO_ARGS) if name == "demo"
                         else (HERE / "synthetic-shift-x.safetensors", CALIBRATED_ARGS))
    render(tmp_path, directions, extra)
    golden = HERE / name
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(golden).as_posix() for p in golden.rglob("*") if p.is_file())
    assert written == expected
    for relative in expected:
        if relative.endswith(".png"):
            assert (tmp_path / relative).read_bytes() == (golden / relative).read_bytes(), relative
    new, old = (json.loads((folder / "manifest.json").read_text()) for folder in (tmp_path, golden))
    for field in KEPT_FIELDS:
        assert new.get(field) == old.get(field), field
    for key in ("spec", "fingerprint", "resolution"):
        assert new["generator"][key] == old["generator"][key]
    assert len(new["images"]) == len(old["images"])
    for mine, theirs in zip(new["images"], old["images"]):
        assert {k: mine.get(k) for k in KEPT_IMAGE_FIELDS} == {k: theirs.get(k) for k in KEPT_IMAGE_FIELDS}
        # rows keep their old fields; the per-image strengths (and clamps) are new
        for new_row, old_row in zip(mine.get("rows", []), theirs.get("rows", []), strict=True):
            assert {k: new_row[k] for k in old_row} == old_row
