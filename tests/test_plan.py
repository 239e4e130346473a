"""The edit plan: validation, the manifest and reproducing command derived from it, all-or-nothing output."""

from __future__ import annotations

import json
import os
import shlex
import warnings
from pathlib import Path

import pytest

import latentdirs
from latentdirs.errors import FingerprintMismatchError, InvalidValueError, OutOfRangeError
from latentdirs.plan import EditPlan, SeedRows, Strengths
from latentdirs.render import Output, render_edits
from tests.conftest import invoke
from tests.goldens.make_goldens import HERE

CALIBRATED = HERE / "synthetic-shift-x.safetensors"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_is_immutable_and_validated(synthetic, synthetic_sefa, eyes):
    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[4, 2], indices=[1], alphas=[-1, 1])
    assert plan.rows == SeedRows((4, 2)) and plan.strengths == Strengths((-1.0, 1.0))
    assert plan.total == 4 and list(plan.jobs())[:2] == [(1, None, 0, -1.0), (1, None, 0, 1.0)]
    with pytest.raises(AttributeError):
        plan.indices = (0,)  # type: ignore[misc]
    with pytest.raises(OutOfRangeError, match="indices: got 16"):
        EditPlan.build(synthetic, synthetic_sefa, seeds=[0], indices=[16])
    with pytest.raises(InvalidValueError, match="layers: got \\[0\\]; allowed: none: space 'z' has one layer"):
        EditPlan.build(synthetic, synthetic_sefa, seeds=[0], layers=[0])
    with pytest.raises(InvalidValueError, match="amounts: .*not calibrated"):
        EditPlan.build(synthetic, synthetic_sefa, seeds=[0], amounts=[0.1])
    with pytest.raises(InvalidValueError, match="clamp_amounts"):
        EditPlan.build(synthetic, synthetic_sefa, seeds=[0], clamp_amounts=True)
    with pytest.raises(InvalidValueError, match="seeds: got \\[-1\\]"):
        EditPlan.build(synthetic, synthetic_sefa, seeds=[-1])
    with pytest.raises(FingerprintMismatchError, match="allow-other-generator"):
        EditPlan.build(eyes, latentdirs.discover(synthetic, "sefa", num_directions=2), seeds=[0])


def test_traverse_checks_the_fingerprint_of_a_given_plan(synthetic, synthetic_sefa, faces):
    faces_directions = latentdirs.discover(faces, "sefa", num_directions=2)
    plan = EditPlan.build(faces, faces_directions, seeds=[0], indices=[0], alphas=[1.0])
    other = latentdirs.Directions(faces_directions.vectors, meta={**faces_directions.meta,
                                                                 "generator": {"fingerprint": "sha256:0"}})
    with pytest.raises(FingerprintMismatchError):
        latentdirs.traverse(faces, other, plan)
    allowed = EditPlan(plan.rows, plan.indices, plan.strengths, allow_other_generator=True)
    assert len(next(latentdirs.traverse(faces, other, allowed)).items) == 1


def test_calibrated_manifest_records_applied_strength_and_clamps(synthetic, tmp_path):
    directions = latentdirs.Directions.load(CALIBRATED, generator=synthetic)
    plan = EditPlan.build(synthetic, directions, seeds=[0, 1], amounts=[-0.1, 0.0, 0.5], clamp_amounts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = render_edits(synthetic, directions, plan, tmp_path)
    rows = manifest["images"][0]["rows"]
    assert [row["seed"] for row in rows] == [0, 1]
    for row in rows:
        assert row["clamped"] == [False, False, True], "0.5 lies outside the calibrated range (±0.36)"
        assert abs(row["strengths"][1]) < 1e-6 and row["strengths"][0] < 0 < row["strengths"][2]
    assert rows[0]["strengths"] != rows[1]["strengths"], "each seed gets its own calibrated step"
    strip = next(r for r in manifest["images"] if r["kind"] == "strip")
    assert strip["clamped"] == [False, False, True] and "strengths" in strip


def test_manifest_command_reproduces_the_run_byte_for_byte(cli_runner, tmp_path):
    first = tmp_path / "first"
    args = ["edit", CALIBRATED, "--amounts", "-0.1,0.05,0.5", "--clamp-amounts", "--seeds", "3,1", "--no-strips",
            "--animate", "gif", "--batch-size", "2", "--truncation", "0.7", "--device", "cpu", "-o", first]
    result = invoke(cli_runner, *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((first / "manifest.json").read_text())
    words = shlex.split(manifest["command"])
    assert words[:2] == ["latentdirs", "edit"] and "--no-strips" in words and "--clamp-amounts" in words
    again = tmp_path / "again"
    words[words.index("-o") + 1] = str(again)
    result = invoke(cli_runner, *words[1:])
    assert result.exit_code == 0, result.output
    ours, theirs = _files(first), _files(again)
    assert ours.keys() == theirs.keys() and {"anim_d000.gif", "grid_d000.png"} <= set(ours)
    for name in ours:
        if name != "manifest.json":
            assert ours[name] == theirs[name], name
    replayed = json.loads(theirs["manifest.json"])
    assert replayed["images"] == manifest["images"] and replayed["rows"] == manifest["rows"]


def test_failed_run_leaves_the_directory_as_it_was(synthetic, synthetic_sefa, tmp_path):
    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[0, 1], indices=[0, 1, 2], alphas=[-1, 1])
    render_edits(synthetic, synthetic_sefa, plan, tmp_path)
    before = _files(tmp_path)
    bigger = EditPlan.build(synthetic, synthetic_sefa, seeds=[0, 1, 2], indices=[0, 1, 2], alphas=[-2, 2])
    rendered = []

    def interrupt(count: int) -> None:  # Ctrl-C after the first batch
        rendered.append(count)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_edits(synthetic, synthetic_sefa, bigger, tmp_path, batch_size=4, progress=interrupt)
    assert rendered == [4]
    assert _files(tmp_path) == before, "nothing of the interrupted run may appear, nothing old may go"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_reused_directory_ends_with_exactly_the_manifests_files(synthetic, synthetic_sefa, tmp_path):
    wide = EditPlan.build(synthetic, synthetic_sefa, seeds=[0, 1], indices=[0, 1, 2, 3], alphas=[-1, 1])
    render_edits(synthetic, synthetic_sefa, wide, tmp_path)
    (tmp_path / "notes.txt").write_text("the user's own file")
    narrow = EditPlan.build(synthetic, synthetic_sefa, seeds=[1], indices=[0], alphas=[-1, 1])
    manifest = render_edits(synthetic, synthetic_sefa, narrow, tmp_path)
    listed = {record["file"] for record in manifest["images"]} | {"manifest.json", "notes.txt"}
    assert set(_files(tmp_path)) == listed == {"grid_d000.png", "strips/d000_seed1.png", "manifest.json",
                                               "notes.txt"}


def test_unlisted_stale_outputs_are_named(synthetic, synthetic_sefa, tmp_path):
    (tmp_path / "grid_d007.png").write_bytes(b"from a run without manifest")
    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[0], indices=[0], alphas=[1])
    with pytest.warns(UserWarning, match="1 files .* not in its manifest: grid_d007.png"):
        render_edits(synthetic, synthetic_sefa, plan, tmp_path)
    assert (tmp_path / "grid_d007.png").exists(), "a file no manifest listed is reported, not deleted"


def test_abandoned_staging_and_temporary_files_are_removed(synthetic, synthetic_sefa, tmp_path):
    abandoned = tmp_path / ".latentdirs-staging-999999999-x"
    abandoned.mkdir()
    (abandoned / "grid_d000.png").write_bytes(b"half")
    old_temporary = tmp_path / ".manifest.json.abcd.tmp"
    old_temporary.write_bytes(b"{")
    os.utime(old_temporary, (0, 0))
    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[0], indices=[0], alphas=[1])
    render_edits(synthetic, synthetic_sefa, plan, tmp_path)
    assert not abandoned.exists() and not old_temporary.exists()


def test_hostile_manifest_cannot_delete_outside_the_directory(synthetic, synthetic_sefa, tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema": "latentdirs.edit-manifest", "images": [
        {"file": "../victim.png"}, {"file": str(victim)}, {"file": "strips/../../victim.png"}, {"file": 7}]}))
    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[0], indices=[0], alphas=[1])
    render_edits(synthetic, synthetic_sefa, plan, out)
    assert victim.read_bytes() == b"keep me"


def test_file_discovered_with_random_noise_edits_with_random_noise(cli_runner, tmp_path):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    pickle = write_nvlabs_pickle(random_network(tiny_config()), tmp_path / "toy.pkl") or tmp_path / "toy.pkl"
    path = tmp_path / "noisy.safetensors"
    result = invoke(cli_runner, "discover", f"stylegan2:{pickle}", "-k", "2", "--gen-opt", "noise_mode=random",
                    "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    runs = {}
    for name, extra in (("recorded", []), ("const", ["--gen-opt", "noise_mode=const"])):
        out = tmp_path / name
        result = invoke(cli_runner, "edit", path, "--seeds", "0", "--indices", "0", "--alphas", "0", *extra,
                        "--device", "cpu", "-o", out)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        runs[name] = (manifest["generator"]["options"], (out / "grid_d000.png").read_bytes())
        assert "--gen-opt" in manifest["command"]
    assert runs["recorded"][0] == {"noise_mode": "random"} and runs["const"][0] == {"noise_mode": "const"}
    assert runs["recorded"][1] != runs["const"][1], "random noise renders other images than constant noise"
