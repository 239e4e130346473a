"""Editing latents files (``edit --latents``, ``--paste-back``) end to end, without the optimiser: seed
latents of dcgan-faces stand in for inverted photos, so every image can be checked against a seed edit."""

from __future__ import annotations

import json
import shlex
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentdirs
from latentdirs.errors import InvalidValueError
from latentdirs.images import LABEL_HEIGHT, MARGIN, to_uint8
from latentdirs.latent_file import Latents
from latentdirs.pasteback import FEATHER_FRACTION, feather_mask
from latentdirs.photos import prepare_images, read_photo
from latentdirs.plan import EditPlan, LatentRows, file_tag
from latentdirs.render import Output, render_edits
from tests.conftest import invoke
from tests.goldens.make_goldens import HERE
from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

DATA = Path(__file__).resolve().parent / "data"
FACES_SEFA = Path(str(resources.files("latentdirs.checkpoints") / "dcgan-faces-sefa.safetensors"))
ALPHAS = "-2,0,2"


@pytest.fixture(scope="module")
def stylegan(tmp_path_factory):
    path = write_nvlabs_pickle(random_network(tiny_config()), tmp_path_factory.mktemp("sg2") / "network.pkl")
    return latentdirs.load_generator(f"stylegan2:{path}", device="cpu")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(faces, tmp_path):
    """Latents of seeds 0-2 saved as if they were the inversions of three photos (copied into tmp_path)."""
    for name in ("astronaut.jpg", "chelsea.png"):
        shutil.copy(DATA / name, tmp_path / name)
    prepared = prepare_images([tmp_path / "astronaut.jpg", tmp_path / "chelsea.png"], 64)
    face = prepare_images([tmp_path / "astronaut.jpg"], 64, crop="72,10,84,84")
    records = prepared.records + face.records  # the third photo: the astronaut's face only
    rows = [{"source": record.to_json(), "metrics": {"psnr": 20.0 + k}} for k, record in enumerate(records)]
    latents = Latents.create(faces.sample_seeds([0, 1, 2]), generator=faces, space="z",
                             labels=[r.label for r in records], rows=rows)
    return latents.save(tmp_path / "photos.safetensors"), latents


def _tiles(path: Path, columns: int, width: int) -> np.ndarray:
    """The tile block of a grid (everything right of the row labels, below title and column labels)."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return pixels[2 * LABEL_HEIGHT:, -(columns * (width + MARGIN) + MARGIN):]


def test_latents_edit_equals_the_seed_edit_of_the_same_latents(faces, photos, cli_runner, tmp_path):
    path, latents = photos
    common = ["--indices", "0,1", "--alphas", ALPHAS, "--device", "cpu"]
    seeds, mine = tmp_path / "seeds", tmp_path / "mine"
    assert invoke(cli_runner, "edit", FACES_SEFA, "--seeds", "0-2", *common, "-o", seeds).exit_code == 0
    result = invoke(cli_runner, "edit", FACES_SEFA, "--latents", path, *common, "-o", mine)
    assert result.exit_code == 0, result.output
    for index in (0, 1):
        grid = f"grid_d{index:03d}.png"
        assert np.array_equal(_tiles(seeds / grid, 3, 64), _tiles(mine / grid, 3, 64)), grid
    manifest = json.loads((mine / "manifest.json").read_text())
    assert manifest["rows"]["kind"] == "latents" and manifest["rows"]["sha256"] == latents.sha256
    assert manifest["rows"]["path"] == str(path) and manifest["rows"]["space"] == "z"
    first = manifest["images"][0]
    assert [row["label"] for row in first["rows"]] == ["astronaut", "chelsea", "astronaut"]
    assert first["rows"][1] == {"latent": 1, "label": "chelsea", "source_sha256": latents.source(1).sha256,
                                "class": None, "strengths": [-2.0, 0.0, 2.0]}
    strips = sorted(r["file"] for r in manifest["images"] if r["kind"] == "strip" and r["index"] == 0)
    assert strips == ["strips/d000_astronaut_r0.png", "strips/d000_astronaut_r2.png", "strips/d000_chelsea.png"]
    words = shlex.split(manifest["command"])
    assert words[words.index("--latents") + 1] == str(path.resolve()) and "--seeds" not in words


def test_traverse_of_latent_rows_is_byte_identical_to_seeds(faces, photos):
    _, latents = photos
    directions = latentdirs.Directions.load(FACES_SEFA, generator=faces)
    options = {"indices": [1, 4], "alphas": [-3.0, 1.5]}
    ours = torch.cat([b.images for b in latentdirs.traverse(faces, directions, rows=latents, **options)])  # as is
    theirs = torch.cat([b.images for b in latentdirs.traverse(faces, directions, seeds=[0, 1, 2], **options)])
    assert torch.equal(ours, theirs)


def test_paste_back_blends_the_edited_crop_into_the_full_photo(faces, photos, cli_runner, tmp_path):
    path, latents = photos
    out = tmp_path / "out"
    args = ["edit", FACES_SEFA, "--latents", path, "--indices", "0", "--alphas", ALPHAS, "--paste-back",
            "--no-strips", "--device", "cpu", "-o", out]
    result = invoke(cli_runner, *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    pastes = [r for r in manifest["images"] if r["kind"] == "paste"]
    assert [r["file"] for r in pastes][:3] == ["paste/d000_astronaut_r0_-2.0.png", "paste/d000_astronaut_r0_+0.0.png",
                                               "paste/d000_astronaut_r0_+2.0.png"]
    assert len(pastes) == 9 and manifest["output"]["paste_back"] is True
    chelsea = next(r for r in pastes if r["file"] == "paste/d000_chelsea_+2.0.png")
    assert chelsea["crop"] == [30, 0, 120, 120] and chelsea["alpha"] == 2.0 and chelsea["latent"] == 1
    assert "--paste-back" in shlex.split(manifest["command"])

    directions = latentdirs.Directions.load(FACES_SEFA, generator=faces)
    batch = next(latentdirs.traverse(faces, directions, rows=LatentRows(latents), indices=[0], alphas=[2.0]))
    tile = to_uint8(batch.images)[1]  # row 1 (chelsea) at +2
    edited = np.asarray(Image.fromarray(tile).resize((120, 120), Image.Resampling.LANCZOS), dtype=np.int32)
    original = np.asarray(read_photo(tmp_path / "chelsea.png")[0], dtype=np.int32)
    pasted = np.asarray(Image.open(out / chelsea["file"]).convert("RGB"), dtype=np.int32)
    assert pasted.shape == original.shape == (120, 180, 3), "the full-size photo"
    assert np.array_equal(pasted[:, :30], original[:, :30]) and np.array_equal(pasted[:, 150:], original[:, 150:])
    ramp = int(np.ceil(FEATHER_FRACTION * 120))
    inner = slice(ramp, 120 - ramp)
    assert np.array_equal(pasted[inner, 30 + ramp:150 - ramp], edited[inner, ramp:120 - ramp]), "centre: the edit"
    # the border blends: across the left ramp the photo's share falls smoothly from ~all to none
    share = [np.abs(pasted[inner, 30 + k] - original[inner, 30 + k]).mean()
             / max(np.abs(edited[inner, k] - original[inner, 30 + k]).mean(), 1e-6) for k in range(ramp)]
    assert share[0] < 0.05 and share[-1] > 0.9 and all(b >= a - 0.02 for a, b in zip(share, share[1:])), share

    face = next(r for r in pastes if r["file"] == "paste/d000_astronaut_r2_+0.0.png")
    assert face["crop"] == [72, 10, 84, 84]
    whole = np.asarray(Image.open(out / face["file"]).convert("RGB"), dtype=np.int32)
    source = np.asarray(read_photo(tmp_path / "astronaut.jpg")[0], dtype=np.int32)
    outside = np.ones(source.shape[:2], dtype=bool)
    outside[10:94, 72:156] = False
    assert np.array_equal(whole[outside], source[outside]) and not np.array_equal(whole, source)

    again = tmp_path / "again"
    words = shlex.split(manifest["command"])
    words[words.index("-o") + 1] = str(again)
    assert invoke(cli_runner, *words[1:]).exit_code == 0
    ours, theirs = _files(out), _files(again)
    assert ours.keys() == theirs.keys()
    assert all(ours[name] == theirs[name] for name in ours if name != "manifest.json")


def test_feather_mask_is_a_smooth_ramp():
    mask = feather_mask(100, 50)
    assert mask.shape == (50, 100) and mask[25, 50] == 1.0 and 0 < mask[0, 0] < 0.05  # ramp: 4 px
    assert np.all(np.diff(mask[25, :50]) >= 0) and np.array_equal(mask[:, ::-1], mask)


def test_paste_back_refuses_a_changed_photo_and_leaves_the_directory(faces, photos, cli_runner, tmp_path):
    path, _ = photos
    out = tmp_path / "out"
    args = ["edit", FACES_SEFA, "--latents", path, "--indices", "0", "--alphas", "0", "--device", "cpu", "-o", out]
    assert invoke(cli_runner, *args, "--paste-back").exit_code == 0
    before = _files(out)
    Image.open(tmp_path / "chelsea.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "chelsea.png")
    result = invoke(cli_runner, *args[:-2], "--alphas", "1", "--paste-back", "-o", out)
    assert result.exit_code == 1 and "Its content changed" in result.stderr and "chelsea.png" in result.stderr
    assert _files(out) == before, "refused before anything was written"
    narrower = invoke(cli_runner, *args)  # without --paste-back: the earlier run's paste files are removed
    assert narrower.exit_code == 0
    assert not (out / "paste").exists() or not list((out / "paste").iterdir())


def test_paste_back_is_all_or_nothing(faces, photos, tmp_path):
    _, latents = photos
    directions = latentdirs.Directions.load(FACES_SEFA, generator=faces)
    plan = EditPlan.build(faces, directions, rows=LatentRows(latents), indices=[0, 1], alphas=[-1, 1])

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_edits(faces, directions, plan, tmp_path / "out", output=Output(paste_back=True), batch_size=4,
                     progress=interrupt)
    assert not [p for p in (tmp_path / "out").rglob("*")], "nothing of the interrupted run may appear"
    manifest = render_edits(faces, directions, plan, tmp_path / "out", output=Output(paste_back=True))
    assert manifest["command"] is None, "directions and latents in memory: no command names them"
    assert len([r for r in manifest["images"] if r["kind"] == "paste"]) == 2 * 3 * 2


def test_usage_errors_and_refusals(faces, photos, cli_runner, tmp_path):
    path, latents = photos
    both = invoke(cli_runner, "edit", FACES_SEFA, "--latents", path, "--seeds", "0", "-o", tmp_path / "x")
    assert both.exit_code == 2 and "--seeds and --latents exclude each other" in both.stderr
    lone = invoke(cli_runner, "edit", FACES_SEFA, "--paste-back", "-o", tmp_path / "x")
    assert lone.exit_code == 2 and "--paste-back needs --latents" in lone.stderr
    psi = invoke(cli_runner, "edit", FACES_SEFA, "--latents", path, "--truncation", "0.7", "-o", tmp_path / "x")
    assert psi.exit_code == 1 and "--truncation: got 0.7; allowed: the truncation the latents were inverted with" \
        in psi.stderr
    directions = latentdirs.Directions.load(FACES_SEFA, generator=faces)
    unsourced = Latents.create(latents.tensor, generator=faces, space="z", labels=latents.labels)
    plan = EditPlan.build(faces, directions, rows=LatentRows(unsourced), indices=[0], alphas=[1])
    with pytest.raises(InvalidValueError, match="paste_back: got 'astronaut'; allowed: rows whose latents file"):
        render_edits(faces, directions, plan, tmp_path / "y", output=Output(paste_back=True))
    seeds = EditPlan.build(faces, directions, seeds=[0], indices=[0], alphas=[1])
    with pytest.raises(InvalidValueError, match="paste_back: got True; allowed: only with latents rows"):
        render_edits(faces, directions, seeds, tmp_path / "y", output=Output(paste_back=True))
    assert file_tag("Ünïcode photo (2).final") == "n_code_photo_2_final" and file_tag("***") == "row"


def test_conditional_rows_render_under_their_own_class(eyes, tmp_path):
    directions = latentdirs.discover(eyes, "sefa", num_directions=2)
    latents = Latents.create(eyes.sample_seeds([0, 1]), generator=eyes, space="z", labels=["left", "right"],
                             classes=["hazel", 5])
    latents.save(tmp_path / "eyes.safetensors")
    hazel = eyes.class_names.index("hazel")
    own = EditPlan.build(eyes, directions, rows=LatentRows(latents), indices=[0], alphas=[1.0])
    assert own.row_classes and [c for _, c, _, _ in own.jobs()] == [hazel, 5]
    images = next(latentdirs.traverse(eyes, directions, own)).images
    for position, class_id in enumerate((hazel, 5)):
        alone = next(latentdirs.traverse(eyes, directions, seeds=[position], classes=[class_id], indices=[0],
                                         alphas=[1.0])).images
        assert torch.equal(images[position], alone[0])
    assert own.describe()["row_classes"] is True and "--class" not in own.command_words()
    blue = EditPlan.build(eyes, directions, rows=LatentRows(latents), classes=["blue"], indices=[0], alphas=[1.0])
    assert not blue.row_classes and {c for _, c, _, _ in blue.jobs()} == {eyes.class_names.index("blue")}


def test_latents_file_space_conversion_forward_only(stylegan, faces):
    z = stylegan.sample(2, seed=5, space="z")
    latents = Latents.create(z, generator=stylegan, space="z", labels=["a", "b"], truncation=0.7)
    w = latents.to_space(stylegan, "w")
    assert torch.allclose(w.tensor, stylegan.to_space(z, "z", "w", truncation=0.7))
    assert w.meta["converted_from"] == "z" and w.space == "w" and w.truncation == 0.7
    w_plus = w.to_space(stylegan, "w+")
    layers = stylegan.space("w+").num_layers
    assert w_plus.shape == (2, layers, stylegan.space("w").dim)
    assert torch.equal(w_plus.tensor, w.tensor.unsqueeze(1).expand(-1, layers, -1))
    with pytest.raises(InvalidValueError, match="latents: got \"space 'w'\"; allowed: latents .* can map to 'z' "
                                                ".*never back"):
        w.in_space(stylegan, "z")
    assert Latents.create(faces.sample_seeds([0]), generator=faces, space="z").to_space(faces, "z").space == "z"


def test_edit_rows_in_another_space_are_mapped_or_refused(stylegan):
    generator = stylegan
    z = generator.sample(2, seed=3, space="z")
    in_w = Latents.create(generator.to_space(z, "z", "w"), generator=generator, space="w", labels=["a", "b"])
    w_plus_directions = latentdirs.discover(generator, "sefa", num_directions=2)
    assert w_plus_directions.space == "w+"
    options = {"indices": [0], "alphas": [1.0]}
    from_w = next(latentdirs.traverse(generator, w_plus_directions, rows=LatentRows(in_w), **options)).images
    with torch.no_grad():
        moved = generator.to_space(z, "z", "w+") + w_plus_directions.vectors[0]
        expected = generator.synthesize(moved, space="w+")
    assert torch.allclose(from_w, expected, atol=1e-5), "w rows → w+ (repeated), then shifted"
    z_directions = latentdirs.Directions(torch.eye(generator.z_dim)[:2], meta={
        "generator": generator.describe(), "space": "z"})
    with pytest.raises(InvalidValueError, match="latents: got \"space 'w'\"; allowed: .*can map to 'z'"):
        EditPlan.build(generator, z_directions, rows=LatentRows(in_w), indices=[0])


def test_calibrated_amounts_work_on_latent_rows(synthetic):
    directions = latentdirs.Directions.load(HERE / "synthetic-shift-x.safetensors", generator=synthetic)
    latents = Latents.create(synthetic.sample_seeds([0, 1]), generator=synthetic, space="z", labels=["p", "q"])
    options = {"amounts": [-0.1, 0.0, 0.1]}
    ours = list(latentdirs.traverse(synthetic, directions, rows=LatentRows(latents), **options))
    theirs = list(latentdirs.traverse(synthetic, directions, seeds=[0, 1], **options))
    assert torch.equal(torch.cat([b.images for b in ours]), torch.cat([b.images for b in theirs]))
    assert [i.alpha for b in ours for i in b.items] == [i.alpha for b in theirs for i in b.items]
