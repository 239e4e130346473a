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


def _assert_same_image(written: Path, golden: Path) -> None:
    """The same bytes — or, where this CPU's float kernels round differently from the machine that wrote the
    goldens (an AVX-512/AMX Xeon turned one pixel of the demo's grid by one level), the same pixels but for
    a few one-level roundings: at most one level anywhere and on at most 0.1 % of the values. Any change
    of the rendering itself moves far more."""
    if written.read_bytes() == golden.read_bytes():
        return
    import numpy as np
    from PIL import Image

    new, old = (np.asarray(Image.open(path)).astype(np.int16) for path in (written, golden))
    assert new.shape == old.shape, written.name
    differ = np.abs(new - old)
    assert differ.max() <= 1 and (differ > 0).mean() <= 1e-3, (written.name, int(differ.max()), int((differ > 0).sum()))


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
            _assert_same_image(tmp_path / relative, golden / relative)
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
