"""The inversion core, latentdirs.invert, the losses, and ``latentdirs invert`` on real image files."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

import latentdirs
from latentdirs.errors import InvalidValueError, LatentDirsError, MissingWeightsError, NotSupportedError
from latentdirs.images import to_uint8
from latentdirs.invert import editability, invert_tensors, inversion_options
from latentdirs.inversion import Inversion, Schedule, noise_regularisation, space_model
from latentdirs.latent_file import Latents
from latentdirs.losses import (DEFAULT_LOSS, check_lpips_weights, ms_ssim, mse, multiscale_mse, parse_loss, psnr,
                               ssim_window)
from latentdirs.photos import prepare_image
from tests.conftest import invoke

PHOTO = "tests/data/astronaut.jpg"
FACE = "72,10,84,84"


@pytest.fixture(autouse=True, scope="module")
def invert_registered():
    """The command is registered in cli/main.py by the lead; until then (and harmlessly after) here."""
    from latentdirs.cli.invert import invert_command
    from latentdirs.cli.main import cli

    if "invert" not in cli.commands:
        cli.add_command(invert_command)


# ---------------------------------------------------------------------------------------------- losses
def test_loss_specs_parse_and_refuse_with_one_line():
    assert parse_loss("multiscale+0.5*ms-ssim").terms == ((1.0, "multiscale"), (0.5, "ms-ssim"))
    assert parse_loss(" MSE ").spec == "mse" and parse_loss(DEFAULT_LOSS).spec == DEFAULT_LOSS
    for bad, message in (("l1", "loss: got 'l1'; allowed: mse, multiscale"), ("-1*mse", "a weight > 0"),
                         ("mse+mse", "each name once"), ("", "loss: got ''"), ("x*mse", "a weight > 0")):
        with pytest.raises(LatentDirsError, match=message) as caught:
            parse_loss(bad)
        assert "\n" not in str(caught.value)


def test_losses_are_per_image_and_zero_on_identical_images():
    a = torch.rand(3, 3, 64, 64) * 2 - 1
    b = a.clone()
    b[1] += 0.2 * torch.randn(3, 64, 64)
    for name in ("mse", "multiscale", "ms-ssim"):
        values = parse_loss(name)(b, a)
        assert values.shape == (3,) and values[0].abs() < 1e-5 and values[2].abs() < 1e-5 and values[1] > 1e-3
    assert ms_ssim(a, a).sub(1).abs().max() < 1e-5
    assert multiscale_mse(a, b)[1] < mse(a, b)[1]  # coarse levels average the noise away
    assert psnr(a, a).min() > 100 and abs(float(psnr(a, a + 0.02)[0]) - 10 * math.log10(4 / 0.0004)) < 1e-3


def test_ms_ssim_works_at_every_generator_size():
    assert [ssim_window(s) for s in (33, 64, 128, 256)] == [3, 3, 7, 11]
    for side in (16, 32, 64, 128):
        x = torch.rand(2, 3, side, side) * 2 - 1
        assert ms_ssim(x, x.flip(-1)).shape == (2,)


def test_lpips_without_its_package_or_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the backbone weights are absent
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth") as caught:
        check_lpips_weights()
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)
    try:
        import lpips  # noqa: F401  (only whether it is installed)
    except ImportError:
        with pytest.raises(NotSupportedError, match=r"pip install 'latentdirs\[lpips\]'"):
            parse_loss("mse+lpips").prepare()
    else:
        with pytest.raises(MissingWeightsError, match="cannot be downloaded here"):
            parse_loss("mse+lpips").prepare()


# ---------------------------------------------------------------------------------------------- core
def test_schedule_ramps_and_anneals():
    schedule = Schedule(100, 0.1, rampup=0.05, rampdown=0.25, noise=0.5, noise_ramp=0.75)
    assert schedule.lr_at(0) == pytest.approx(0.02) and schedule.lr_at(4) == pytest.approx(0.1)
    assert schedule.lr_at(50) == pytest.approx(0.1) and schedule.lr_at(99) < 0.001
    assert schedule.lr_at(87) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi * 0.52)))
    assert schedule.noise_at(0) == 0.5 and schedule.noise_at(75) == 0 and schedule.noise_at(99) == 0
    plain = Schedule(10, 0.05)
    assert {plain.lr_at(t) for t in range(10)} == {0.05} and plain.noise_at(0) == 0


def _synthetic_problem(synthetic, seeds):
    truth = synthetic.sample_seeds(seeds)
    with torch.no_grad():
        targets = synthetic.synthesize(truth)
    return truth, targets, space_model(synthetic, "z")


def test_a_batch_follows_each_image_alone_and_keep_preserves_adam_state(synthetic):
    _, targets, model = _synthetic_problem(synthetic, [1, 2, 3, 4])
    schedule = Schedule(30, 0.05, rampup=0.1, rampdown=0.3)

    def run(rows, keep_after=None, keep=None):
        inversion = Inversion(model.render, model.start(len(rows)), targets[rows], mse, schedule, project=model.project)
        if keep is not None:
            inversion.run(keep_after)
            inversion.keep(torch.tensor(keep))
        return inversion.run().latents.detach()

    together = run([0, 1, 2, 3])
    alone = torch.cat([run([k]) for k in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    kept = run([0, 1, 2, 3], keep_after=12, keep=[2, 0])  # rows dropped mid-run, moments kept
    assert torch.allclose(kept, together[[2, 0]], atol=1e-5)


def test_class_weights_are_optimised_kept_by_rows_and_hardened_into_classes():
    # a two-class "generator" whose first layer is affine in [z, weights]: image = tanh(z·A + w·B)
    random = torch.Generator().manual_seed(3)
    rows_z, rows_c = torch.randn(4, 48, generator=random), 3 * torch.randn(2, 48, generator=random)

    def render(latents, noise, classes, offsets=None):
        weights = classes if classes.is_floating_point() else torch.eye(2)[classes]
        return torch.tanh(latents @ rows_z + weights @ rows_c).view(-1, 3, 4, 4)

    z_true = 0.5 * torch.randn(3, 4, generator=random)
    targets = render(z_true, None, torch.tensor([1, 0, 1]))
    start = torch.full((3, 2), 0.5)

    def inversion():
        return Inversion(render, torch.zeros(3, 4), targets, mse, Schedule(120, 0.05), class_weights=start,
                         class_lr=0.05)

    whole = inversion().run()
    assert whole.class_weights.argmax(1).tolist() == [1, 0, 1] and float(whole.errors().max()) < 0.02
    kept = inversion().run(40)
    kept.keep(torch.tensor([2, 0]))                     # the weights and their Adam moments follow the rows
    kept.run()
    assert torch.allclose(kept.class_weights, whole.class_weights[[2, 0]], atol=1e-5)
    hard = inversion().run(60)
    hard.harden(torch.tensor([1, 0, 1]))
    assert hard.class_weights is None and hard.classes.tolist() == [1, 0, 1]
    assert float(hard.run().errors().max()) < 0.02      # goes on under the classes, with z's moments kept
    with pytest.raises(ValueError, match="no class weights"):
        hard.harden(torch.tensor([0, 0, 0]))


def test_inversion_recovers_a_known_latent_on_synthetic(synthetic):
    truth, targets, _ = _synthetic_problem(synthetic, [11, 12, 13, 14])
    result = invert_tensors(synthetic, targets, steps=200, batch_size=4)
    factors = synthetic.network.factor_values(result.latents) - synthetic.network.factor_values(truth)
    assert result.psnr.min() > 40 and factors.abs().max() < 0.05  # measured: ≥ 50 dB, ≤ 0.01
    assert result.classes is None and result.latents.norm(dim=1).max() <= math.sqrt(16) + 1e-4


@pytest.mark.slow
def test_unseen_dcgan_faces_seeds_are_recovered_without_restarts(faces):
    z = faces.sample_seeds([9001, 9002])  # rows are independent (per-element Adam): two prove what four did
    with torch.no_grad():
        targets = faces.synthesize(z)
    result = invert_tensors(faces, targets, steps=150)
    assert result.psnr.min() > 30, result.psnr  # measured at 150 steps: 41.9, 36.1 dB (docs/inversion.md "Measured")


def test_options_are_checked_before_any_work(faces):
    for options, message in ((dict(steps=-1), "steps: got -1"), (dict(lr=0), "lr: got 0"),
                             (dict(loss="l2"), "loss: got 'l2'"), (dict(space="w"), "space: got 'w'"),
                             (dict(latent_noise=-1), "latent_noise"), (dict(search=0), "search"),
                             (dict(noise_maps=True), "noise_maps: got True")):
        with pytest.raises(LatentDirsError, match=message):
            inversion_options(faces, **options)
    with pytest.raises(InvalidValueError, match=r"images: got \(1, 3, 32, 32\)"):
        invert_tensors(faces, torch.zeros(1, 3, 32, 32), steps=1)
    with pytest.raises(InvalidValueError, match="class: got 'blue'; allowed: none"):
        invert_tensors(faces, torch.zeros(1, 3, 64, 64), steps=1, classes="blue")
    with pytest.raises(InvalidValueError, match="steps: got 0"):
        latentdirs.invert(faces, torch.zeros(1, 3, 64, 64), steps=0)


# ---------------------------------------------------------------------------------------------- StyleGAN2
@pytest.fixture(scope="module")
def stylegan(tmp_path_factory):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    file = write_nvlabs_pickle(random_network(tiny_config(), seed=3), tmp_path_factory.mktemp("sg2") / "g.pkl")
    return latentdirs.load_generator(f"stylegan2:{file}", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("space", ["w", "w+"])
def test_stylegan2_w_inversion_improves_on_the_mean_and_keeps_noise_normalised(stylegan, space):
    truth = stylegan.sample_seeds([5, 6], space=space)
    with torch.no_grad():
        targets = stylegan.synthesize(truth, space=space)
    model = space_model(stylegan, space)
    assert torch.equal(model.start(1)[0], stylegan.network.mapping.w_avg.expand(*model.shape))
    start_psnr = psnr(stylegan.synthesize(model.start(2), space=space).detach(), targets)
    result = invert_tensors(stylegan, targets, space=space, steps=40)
    assert result.options.noise_maps and len(result.noise) == len(stylegan.noise_resolutions()) == 7
    assert (result.psnr > start_psnr + 3).all(), (start_psnr, result.psnr)  # measured at 30 steps: +7 … +8 dB
    for noise in result.noise:
        assert noise.mean(dim=(1, 2, 3)).abs().max() < 1e-4
        assert noise.std(dim=(1, 2, 3), unbiased=False).sub(1).abs().max() < 1e-3
    assert noise_regularisation(result.noise).max() < 0.05  # measured: 0.08 after 5 steps, 0.005 after 30
    assert result.psnr_with_noise is not None and result.latents.shape == (2, *model.shape)


def test_explicit_noise_maps_render_like_the_generators_own(stylegan):
    w = stylegan.sample(2, seed=1, space="w")
    own = [layer.noise_const.expand(2, 1, -1, -1) for layer in stylegan.network.synthesis.conv_layers()]
    with torch.no_grad():
        assert torch.allclose(stylegan.synthesize_with_noise(w, space="w", noise=own),
                              stylegan.synthesize(w, space="w"), atol=1e-6)


# ---------------------------------------------------------------------------------------------- classes
def test_the_class_race_keeps_each_images_best_classes_and_decides_before_the_offset(faces):
    from latentdirs.invert import FINALISTS, _decision_step, _finalists

    owner = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])           # image of each row
    classes = torch.tensor([5, 5, 2, 7, 5, 2, 2, 7])         # its class
    errors = torch.tensor([0.3, 0.1, 0.2, 0.15, 0.4, 0.5, 0.05, 0.6])
    assert FINALISTS == 2  # each image's best row of each of its two best classes, best first
    assert _finalists(owner, classes, errors, 2).tolist() == [1, 3, 6, 4]
    assert _finalists(owner, None, errors, 2).tolist() == [1, 6]  # no classes: each image's best row
    with_offset, _ = inversion_options(faces, steps=100, feature_offset=True)
    without, _ = inversion_options(faces, steps=100, feature_offset=False)
    assert _decision_step(with_offset) == with_offset.offset_start() == 50 and _decision_step(without) == 100


def test_dcgan_eyes_renders_class_weights_and_a_one_hot_is_the_class(eyes, faces):
    z = eyes.sample(3, seed=4)
    ids = torch.tensor([0, 3, 7])
    with torch.no_grad():
        hard = eyes.synthesize(z, classes=ids)
        soft = eyes.synthesize_class_weights(z, torch.eye(8)[ids])
        offsets = torch.full((3, *eyes.feature_offset_shape), 0.05)
        assert torch.allclose(eyes.synthesize_class_weights(z, torch.eye(8)[ids], offsets),
                              eyes.synthesize(z, classes=ids, offsets=offsets), atol=1e-5)
    assert torch.allclose(soft, hard, atol=1e-5)
    weights = torch.full((3, 8), 1 / 8, requires_grad=True)
    eyes.synthesize_class_weights(z, weights).square().mean().backward()
    assert weights.grad is not None and bool(weights.grad.abs().sum() > 0)  # the weights can be optimised
    rows_z, rows_c = eyes.class_rows()
    assert rows_z.shape == (eyes.z_dim, 1024 * 16) and rows_c.shape == (8, 1024 * 16)
    with pytest.raises(InvalidValueError, match=r"weights: got 'shape \(3, 5\)'; allowed: shape \(3, 8\)"):
        eyes.synthesize_class_weights(z, torch.zeros(3, 5))
    with pytest.raises(InvalidValueError, match="allowed: none: this generator is unconditional"):
        faces.synthesize_class_weights(faces.sample(1, seed=0), torch.zeros(1, 1))


def test_the_class_read_from_soft_weights_is_the_nearest_in_what_z_cannot_absorb(eyes):
    from latentdirs.invert import _read_classes

    model = space_model(eyes, "z")
    z = 0.5 * eyes.sample(3, seed=9)                 # well inside the ball: the correction is not clamped
    weights = torch.zeros(3, 8)
    weights[0, 2] = 1.0                               # exactly class 2: read as 2, z unchanged
    weights[1, 3], weights[1, 5] = 0.7, 0.3           # mostly 3
    weights[2, 6], weights[2, 1] = 0.45, 0.55         # mostly 1
    classes, moved = _read_classes(model, z, weights, range(8))
    assert classes.tolist() == [2, 3, 1]
    assert torch.allclose(moved[0], z[0], atol=1e-4)
    # the latent moved by least squares: what is left of the first layer's change is orthogonal to z's rows
    rows_z, rows_c = eyes.class_rows()
    before = (weights[1] - torch.eye(8)[3]) @ rows_c            # soft minus hard first layer, z unmoved
    left = before + (z[1] - moved[1]) @ rows_z
    assert float((rows_z @ left).norm()) < 1e-3 * float((rows_z @ before).norm())
    # only the candidates can be read: among {5, 6} the second image is 5
    assert _read_classes(model, z, weights, [5, 6])[0].tolist()[1] == 5


def test_the_soft_class_replaces_the_race_only_where_the_generator_has_the_hook(eyes, faces, tmp_path):
    from latentdirs.invert import _soft_ids
    from tests.biggan_tiny import write_biggan_dir

    common = dict(steps=4, starts=2, loss="mse", feature_offset=False, start_candidates=4)
    options, model = inversion_options(eyes, **common)
    assert options.class_search == "race" and _soft_ids(model, [list(range(8))] * 2, options) is None  # the default
    options, model = inversion_options(eyes, class_search="soft", **common)
    assert model.soft_classes and _soft_ids(model, [list(range(8))] * 2, options) == list(range(8))
    assert _soft_ids(model, [[1, 2], [1, 3]], options) is None   # per-image candidates (an encoder's): the race
    assert _soft_ids(model, [[4]] * 2, options) is None          # one class: fixed
    assert not space_model(faces, "z").soft_classes
    biggan = latentdirs.load_generator(f"biggan:{write_biggan_dir(tmp_path)}", device="cpu")
    assert not space_model(biggan, "z").soft_classes              # the class enters through an embedding
    for generator in (faces, biggan):  # asked for where it cannot work: one line, before any work
        with pytest.raises(InvalidValueError, match="class_search: got 'soft'; allowed: 'race' for space 'z'"):
            inversion_options(generator, class_search="soft")
    with pytest.raises(InvalidValueError, match="class_search: got 'hard'; allowed: 'race' or 'soft'"):
        inversion_options(eyes, class_search="hard")
    result = invert_tensors(biggan, biggan.synthesize(biggan.sample(2, seed=1), classes=[1, 2]).detach(), steps=3,
                            classes=[1, 2], starts=1, start_candidates=4, loss="mse")
    assert set(result.classes) <= {1, 2}
    # eyes, with given candidates: during the search one row per (image, candidate class, start) — weights
    # leaning to the row's class, only on the candidates — then one per image
    with torch.no_grad():
        targets = eyes.synthesize(eyes.sample(2, seed=3), classes=[3, 6])
    seen = []
    found = invert_tensors(eyes, targets, steps=4, search=0.5, starts=2, start_candidates=4, loss="mse",
                           classes=["gray", "hazel", "red"], class_search="soft",
                           progress=lambda done, total: seen.append((done, total)))
    assert set(found.classes) <= {3, 6, 7} and seen[-1] == (2 * (3 * 2 * 2 + 2),) * 2


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="a short run's limit: at 80 steps the finalist race finds 3 and 6 with inversion "
                   "seeds 0 and 1 but takes 6 for the class-3 eye with seed 2 — these fits are not converged; at the "
                   "default 500 steps the race found 16 of 16 classes (docs/inversion.md, Measured, Classes), a run "
                   "too long for the test suite")
def test_conditional_inversion_finds_the_true_class_of_dcgan_eyes(eyes):
    z = eyes.sample_seeds([21, 22])
    classes = torch.tensor([3, 6])
    with torch.no_grad():
        targets = eyes.synthesize(z, classes=classes)
    # short and cheap (one start, MSE, no offset: the finalists race to the end); with the old rule — the
    # best class after the search — class 7 beat the true 3 of the first eye
    result = invert_tensors(eyes, targets, steps=80, search=0.15, starts=1, loss="mse", feature_offset=False)
    assert result.classes == [3, 6] and result.psnr.min() > 20
    fixed = invert_tensors(eyes, targets[:1], steps=5, classes="hazel", starts=1)
    assert fixed.classes == [eyes.resolve_class("hazel")]


@pytest.mark.slow
def test_the_soft_class_finds_the_class_the_race_misses(eyes):
    z = eyes.sample_seeds([21, 22])
    with torch.no_grad():
        targets = eyes.synthesize(z, classes=torch.tensor([3, 6]))
    # the xfail test's run with inversion seed 2, where the race takes 6 for the class-3 eye; the soft class
    # found all 6 of 6 eyes with seeds 0, 1 and 2 (docs/inversion.md, Measured, Classes)
    result = invert_tensors(eyes, targets, steps=80, search=0.15, starts=1, loss="mse", feature_offset=False, seed=2,
                            class_search="soft")
    assert result.classes == [3, 6] and result.psnr.min() > 20 and result.options.class_search == "soft"


# ---------------------------------------------------------------------------------------------- editability
def test_editability_of_sampled_latents_matches_the_sampled_reference(faces):
    measured = editability(faces, faces.sample(6, seed=77), space="z", samples=16)
    assert measured["count"] == 5 and measured["directions"].startswith("sefa")
    assert abs(measured["inverted"]["correlation"] - measured["sampled"]["correlation"]) < 0.15
    assert 0.8 < measured["inverted"]["magnitude"] < 1.2 and 0.9 < measured["inverted"]["prior_distance"] < 1.1
    assert len(measured["rows"]) == 6
    average = editability(faces, torch.zeros(1, 100), space="z", samples=16)["rows"][0]
    assert average["prior_distance"] == 0.0


# ---------------------------------------------------------------------------------------------- Python API
def test_invert_returns_latents_with_provenance(faces, tmp_path):
    latents = latentdirs.invert(faces, [PHOTO, "tests/data/missing.png"], crop=FACE, steps=30, directions=False)
    assert isinstance(latents, latentdirs.Latents) and latents.shape == (1, 100) and latents.labels == ["astronaut"]
    row = latents.rows[0]
    assert row["source"]["crop"] == [72, 10, 84, 84] and row["steps"] == 30 and row["metrics"]["psnr"] > 12
    assert latents.meta["inversion"]["loss"] == DEFAULT_LOSS
    assert latents.meta["inversion"]["failed"][0]["path"] == "tests/data/missing.png"
    again = Latents.load(latents.save(tmp_path / "me.safetensors"), generator=faces)
    assert torch.equal(again.tensor, latents.tensor)


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "astronaut.jpg")
    Image.open("tests/data/chelsea.png").convert("RGB").resize((96, 64)).save(folder / "cat.png")
    return folder


def test_cli_inverts_a_directory_and_writes_latents_grid_and_json(cli_runner, faces, photos, tmp_path):
    out = tmp_path / "out" / "photos.safetensors"
    result = invoke(cli_runner, "invert", photos, "-g", "dcgan-faces", "--steps", "15", "--batch-size", "2",
                    "--json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [image["label"] for image in report["images"]] == ["astronaut", "cat"] and report["failed"] == []
    assert {"psnr", "ms_ssim", "prior_distance", "editability"} <= set(report["images"][0])
    latents = Latents.load(out, generator=faces)
    assert latents.meta["inversion"]["steps"] == 15 and latents.rows[1]["source"]["size"] == [96, 64]
    grid = Image.open(out.with_name("photos-grid.png"))
    assert grid.width > 2 * 64 and grid.height > 2 * 64


def test_cli_one_bad_image_is_skipped_reported_and_exits_1(cli_runner, photos, tmp_path):
    (photos / "broken.png").write_text("not an image")
    out = tmp_path / "p.safetensors"
    result = invoke(cli_runner, "invert", photos, "--steps", "5", "--no-editability", "-o", out)
    assert result.exit_code == 1
    assert "skipped: image: got" in result.stderr and "broken.png" in result.stderr
    assert "1 of 3 inputs failed and were skipped" in result.stderr
    assert Latents.load(out).labels == ["astronaut", "cat"]


@pytest.mark.parametrize("arguments, message", [
    (["{empty}"], "a directory holding images"),
    ([PHOTO, "--crop", "200,200,100,100"], "crop: got '200,200,100,100'; allowed: a box inside the 256×256"),
    (["{tiny}"], "a region at least 16 px"),
    (["{out}"], "--out: got"),
    ([PHOTO, "--class-search", "soft"], "--class-search: got 'soft'; allowed: 'race' for space 'z' of 'dcgan-faces'"),
])
def test_cli_bad_inputs_each_give_one_line(cli_runner, tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (10, 12), (128, 50, 20)).save(tmp_path / "tiny.png")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"x")
    names = {"{empty}": str(tmp_path / "empty"), "{tiny}": str(tmp_path / "tiny.png"), "{out}": str(out)}
    result = invoke(cli_runner, "invert", *[names.get(a, a) for a in arguments], "--steps", "2", "-o", out)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_cli_steps_0_needs_an_encoder(cli_runner, tmp_path):
    result = invoke(cli_runner, "invert", PHOTO, "--steps", "0", "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "--steps 0 needs --encoder" in result.stderr


def test_cli_encoder_only_inversion(cli_runner, synthetic, tmp_path):
    from latentdirs.encoder import train_encoder

    encoder = train_encoder(synthetic, steps=30, batch_size=8, base_channels=4, max_channels=8, recon_weight=0.0)
    path = encoder.save(tmp_path / "enc.safetensors")
    with torch.no_grad():
        image = synthetic.synthesize(synthetic.sample_seeds([3]))
    Image.fromarray(to_uint8(image)[0]).save(tmp_path / "disc.png")
    out = tmp_path / "disc.safetensors"
    result = invoke(cli_runner, "invert", tmp_path / "disc.png", "-g", "synthetic", "--encoder", path, "--steps", "0",
                    "--json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["options"]["start"] == "encoder" and report["options"]["steps"] == 0
    prepared = prepare_image(tmp_path / "disc.png", 64)[0].unsqueeze(0)  # the PNG as invert reads it
    predicted = encoder(prepared).cpu()
    predicted = predicted * torch.clamp(4.0 / predicted.norm(dim=1, keepdim=True), max=1.0)  # the ball, √16
    assert torch.allclose(Latents.load(out).tensor, predicted, atol=1e-5)
