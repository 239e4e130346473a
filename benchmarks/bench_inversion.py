"""Inversion benchmarks and goals (issue 13) on dcgan-faces (and dcgan-eyes), 2 CPU threads.

Run: ``.venv/bin/python -m benchmarks.bench_inversion [SECTION ...]`` with sections (default: all)

* ``photo`` — the astronaut's face (tests/data/astronaut.jpg, box 72,10,84,84): the plain baseline
  (Adam on z, MSE, lr 0.05, ‖z‖ ≤ √100, 500 steps, 8 random restarts in one batch) against the default
  inversion without the feature offset (z only) and with it (the default), one after the other; writes
  docs/img/inversion-astronaut.png (photo | baseline | z only | z + offset). Goal: ≥ 2 dB above the
  baseline in no more wall time, and a face a person recognises (look at the PNG). Then 8 unseen seeds
  G(z*) with and without the offset: PSNR, distance to z*, editability.
* ``seeds`` — 64 unseen seeds G(z*), default options, no restarts. Goal: ≥ 35 dB for ≥ 90 %.
* ``batch`` — 16 images in one batch against a per-image loop, equal steps; the final errors compared.
  Goal: ≥ 3×. Images per second and peak memory (fresh processes).
* ``lord`` — LORD's regularisation on photo crops: latent noise and the activation penalty on and off,
  reconstruction (PSNR, MS-SSIM) and editability (edit correlation, magnitude, prior distance).
* ``losses`` — the losses on photo crops and unseen seeds, equal steps.
* ``classes`` — dcgan-eyes: the class of images of known class — the best class at the search's end (the
  rule before issue 13's fix), the finalist race (the default), the soft class read from the first layer
  (``class_search="soft"``; the default is the race) and a softmax class vector (the DCGAN's one-hot
  input made a softmax, optimised with z, argmax). ``bench_classes(count, steps, starts, search, seeds)``
  for other sizes.
* ``classes-defaults`` — the same images at the default inversion settings, the race and the soft class,
  inverted 4 at a time with each chunk's classes printed as it ends (about 70 CPU-minutes per rule here).

Figures print as tables (and a JSON line each); docs/inversion.md "Measured" quotes them.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import latentdirs
from benchmarks.common import peak_rss_mib, report
from latentdirs.images import grid_image, save_image, to_uint8
from latentdirs.invert import editability, invert_tensors
from latentdirs.inversion import Inversion, Schedule, space_model
from latentdirs.losses import ms_ssim, mse, psnr
from latentdirs.photos import prepare_image

PHOTO, FACE = "tests/data/astronaut.jpg", "72,10,84,84"
#: crops of the astronaut's face, and their mirror images: six "photos" of one face
CROPS = ("72,10,84,84", "68,6,92,92", "76,14,76,76")
GRID = Path("docs/img/inversion-astronaut.png")


def _faces():
    torch.set_num_threads(2)
    return latentdirs.load_generator("dcgan-faces", device="cpu")


def _photos() -> torch.Tensor:
    crops = torch.stack([prepare_image(PHOTO, 64, crop=c)[0] for c in CROPS])
    return torch.cat([crops, crops.flip(-1)])


def baseline(generator, targets: torch.Tensor, *, restarts: int = 8, steps: int = 500, seed: int = 0):
    """The issue's plain baseline: per target, ``restarts`` random starts in one batch, constant-lr Adam
    on z (lr 0.05), pixel MSE, the ball; returns (best latents [N, D], best PSNR [N], seconds)."""
    model = space_model(generator, "z")
    count = targets.shape[0]
    init = torch.randn(count * restarts, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    model.project(init)
    started = time.perf_counter()
    inversion = Inversion(model.render, init, targets.repeat_interleave(restarts, 0), mse, Schedule(steps, 0.05),
                          project=model.project)
    inversion.run()
    seconds = time.perf_counter() - started
    values = psnr(inversion.images(), inversion.targets).view(count, restarts)
    best = values.argmax(1)
    latents = inversion.latents.detach().view(count, restarts, -1)[torch.arange(count), best]
    return latents, values.max(1).values, seconds, values


def bench_photo(seeds: int = 8) -> None:
    """Baseline, default without the feature offset (z only) and default (z + offset), one after the other;
    then ``seeds`` unseen seeds G(z*) inverted with and without the offset (reconstruction, editability)."""
    faces = _faces()
    target = prepare_image(PHOTO, 64, crop=FACE)[0].unsqueeze(0)
    base_z, base_psnr, base_seconds, spread = baseline(faces, target)
    z_only = invert_tensors(faces, target, feature_offset=False)
    ours = invert_tensors(faces, target, feature_offset=True)
    with torch.no_grad():
        base_image = faces.synthesize(base_z).clamp(-1, 1)
    edits = {"z only": editability(faces, z_only.latents, space="z"),
             "z + offset": editability(faces, ours.latents, space="z", offsets=ours.offsets)}
    rows = [("baseline (8 restarts × 500 steps, MSE)", f"{float(base_psnr):.2f} dB best (restarts "
             f"{float(spread.min()):.1f}–{float(spread.max()):.1f}), MS-SSIM "
             f"{float(ms_ssim(base_image, target)):.3f}, {base_seconds:.1f} s")]
    for name, result in (("z only", z_only), ("z + offset (default)", ours)):
        edit = edits["z only" if result is z_only else "z + offset"]["inverted"]
        rows.append((f"{name} ({result.options.steps} steps, {result.options.loss})",
                     f"{float(result.psnr):.2f} dB, MS-SSIM {float(result.ms_ssim):.3f}, {result.seconds:.1f} s "
                     f"({result.seconds / base_seconds:.2f}× the baseline); edit correlation "
                     f"{edit['correlation']:.2f}, magnitude {edit['magnitude']:.2f}"))
    rows.append(("gain over the baseline, wall-time ratio (goal ≥ 2 dB at ≤ 1)",
                 f"{float(ours.psnr - base_psnr):+.2f} dB at {ours.seconds / base_seconds:.2f}"))
    rows.append(("z of the offset run alone, offset RMS", f"{float(ours.psnr_without_offset):.2f} dB, "
                 f"{float(ours.offsets.square().mean().sqrt()):.3f}"))
    tiles = np.stack([to_uint8(target), to_uint8(base_image), to_uint8(z_only.reconstructions),
                      to_uint8(ours.reconstructions)], axis=1)
    save_image(grid_image(np.repeat(np.repeat(tiles, 2, axis=2), 2, axis=3),
                          column_labels=["photo", f"baseline {float(base_psnr):.1f} dB",
                                         f"z only {float(z_only.psnr):.1f} dB", f"z + offset {float(ours.psnr):.1f} dB"]),
               GRID)
    figures: dict = {"baseline_psnr": float(base_psnr), "baseline_seconds": base_seconds,
                     "z_only": {"psnr": float(z_only.psnr), "ms_ssim": float(z_only.ms_ssim), "seconds": z_only.seconds,
                                **edits["z only"]["inverted"]},
                     "offset": {"psnr": float(ours.psnr), "ms_ssim": float(ours.ms_ssim), "seconds": ours.seconds,
                                "psnr_without_offset": float(ours.psnr_without_offset),
                                **edits["z + offset"]["inverted"]},
                     "sampled_correlation": edits["z only"]["sampled"]["correlation"]}
    z = faces.sample_seeds(list(range(100_000, 100_000 + seeds)))
    with torch.no_grad():
        images = faces.synthesize(z)
    for name, offset in (("seeds z only", False), ("seeds z + offset", True)):
        result = invert_tensors(faces, images, feature_offset=offset)
        edit = editability(faces, result.latents, space="z", offsets=result.offsets)["inverted"]
        figures[name] = {"psnr": [round(float(v), 2) for v in result.psnr], "seconds": result.seconds,
                         "z_distance": float((result.latents - z.cpu()).norm(dim=1).mean()), **edit}
        rows.append((f"{name} ({seeds} unseen seeds)", f"PSNR {' '.join(f'{float(v):.1f}' for v in result.psnr)}; "
                     f"≥ 35 dB {int((result.psnr >= 35).sum())}/{seeds}; mean ‖z − z*‖ "
                     f"{figures[name]['z_distance']:.2f}; edit correlation {edit['correlation']:.2f}, magnitude "
                     f"{edit['magnitude']:.2f}; {result.seconds:.0f} s"))
    report("real photo on dcgan-faces (astronaut, box 72,10,84,84), and the feature offset on unseen seeds",
           rows + [("grid", str(GRID))], as_json=figures)


def bench_seeds(count: int = 64) -> None:
    faces = _faces()
    z = faces.sample_seeds(list(range(100_000, 100_000 + count)))
    with torch.no_grad():
        targets = faces.synthesize(z)
    result = invert_tensors(faces, targets)
    values = result.psnr
    share = float((values >= 35).float().mean())
    inside = z.norm(dim=1) <= 10
    report(f"unseen seeds on dcgan-faces ({count} seeds 100000…, default options, no restarts)", [
        ("PSNR ≥ 35 dB (goal ≥ 90 %)", f"{share:.0%}"),
        ("PSNR median / 10th percentile / min", f"{float(values.median()):.1f} / "
         f"{float(values.quantile(0.1)):.1f} / {float(values.min()):.1f} dB"),
        ("seeds with ‖z*‖ > √100 (outside the ball)", f"{int((~inside).sum())}, of which ≥ 35 dB: "
         f"{int((values[~inside] >= 35).sum())}"),
        ("time, images/s", f"{result.seconds:.0f} s, {count / result.seconds:.2f}")],
        as_json={"share_35db": share, "psnr": [round(float(v), 2) for v in values]})


def _child_batch(mode: str, count: int, steps: int) -> None:
    """One fresh process: ``batched`` or ``loop`` inversion of ``count`` unseen seeds (for peak memory)."""
    faces = _faces()
    with torch.no_grad():
        targets = faces.synthesize(faces.sample_seeds(list(range(200_000, 200_000 + count))))
    started = time.perf_counter()
    if mode == "batched":
        results = [invert_tensors(faces, targets, steps=steps, batch_size=count)]
    else:
        results = [invert_tensors(faces, targets[k:k + 1], steps=steps, seed=k) for k in range(count)]
    seconds = time.perf_counter() - started
    error = torch.cat([r.error for r in results])
    print(json.dumps({"seconds": seconds, "error": error.tolist(), "psnr": torch.cat([r.psnr for r in results]).tolist()}))


def bench_batch(count: int = 16, steps: int = 100) -> None:
    figures = {}
    for mode in ("batched", "loop"):
        peak, out = peak_rss_mib([sys.executable, "-m", "benchmarks.bench_inversion", "--child", mode,
                                  str(count), str(steps)])
        figures[mode] = {**json.loads(out.strip().splitlines()[-1]), "peak_mib": peak}
    batched, loop = figures["batched"], figures["loop"]
    same = np.allclose(batched["psnr"], loop["psnr"], atol=0.5)
    report(f"batch against per-image loop ({count} unseen seeds, {steps} steps each)", [
        ("batched: images/s, peak RSS", f"{count / batched['seconds']:.3f}, {batched['peak_mib']:.0f} MiB"),
        ("loop: images/s, peak RSS", f"{count / loop['seconds']:.3f}, {loop['peak_mib']:.0f} MiB"),
        ("speed-up (goal ≥ 3×)", f"{loop['seconds'] / batched['seconds']:.2f}×"),
        ("median PSNR batched / loop (equal error?)", f"{np.median(batched['psnr']):.2f} / "
         f"{np.median(loop['psnr']):.2f} dB ({'equal within 0.5 dB per image' if same else 'NOT equal'})")],
        as_json={"speedup": loop["seconds"] / batched["seconds"], **figures})


def bench_lord(steps: int = 300) -> None:
    faces = _faces()
    targets = _photos()
    rows, figures = [], {}
    for name, options in (("default (no noise, no penalty)", {}),
                          ("latent noise 0.3", {"latent_noise": 0.3}), ("penalty 0.01", {"penalty": 0.01}),
                          ("penalty 0.1", {"penalty": 0.1})):
        result = invert_tensors(faces, targets, steps=steps, **options)
        edit = editability(faces, result.latents, space="z", offsets=result.offsets)
        figures[name] = {"psnr": float(result.psnr.mean()), "ms_ssim": float(result.ms_ssim.mean()), **edit["inverted"]}
        rows.append((name, f"PSNR {figures[name]['psnr']:.2f} dB, MS-SSIM {figures[name]['ms_ssim']:.3f}, edit "
                     f"correlation {edit['inverted']['correlation']:.2f} (sampled {edit['sampled']['correlation']:.2f}), "
                     f"magnitude {edit['inverted']['magnitude']:.2f}, prior distance {edit['inverted']['prior_distance']:.2f}"))
    report(f"LORD's regularisation on six crops of the photo ({steps} steps)", rows, as_json=figures)


def bench_losses(steps: int = 300) -> None:
    faces = _faces()
    with torch.no_grad():
        seeds = faces.synthesize(faces.sample_seeds(list(range(300_000, 300_008))))
    targets = torch.cat([_photos(), seeds])
    rows, figures = [], {}
    for loss in ("mse", "multiscale", "ms-ssim", "multiscale+ms-ssim", "mse+ms-ssim"):
        result = invert_tensors(faces, targets, steps=steps, loss=loss)
        figures[loss] = {"photo_psnr": float(result.psnr[:6].mean()), "photo_ms_ssim": float(result.ms_ssim[:6].mean()),
                         "seed_psnr_median": float(result.psnr[6:].median()),
                         "seeds_35db": int((result.psnr[6:] >= 35).sum())}
        rows.append((loss, f"photos PSNR {figures[loss]['photo_psnr']:.2f} dB, MS-SSIM "
                     f"{figures[loss]['photo_ms_ssim']:.3f}; seeds median {figures[loss]['seed_psnr_median']:.1f} dB, "
                     f"{figures[loss]['seeds_35db']}/8 ≥ 35 dB"))
    report(f"losses ({steps} steps, six photo crops and 8 unseen seeds)", rows, as_json=figures)


def _soft_class_inversion(eyes, targets: torch.Tensor, steps: int, seed: int = 0):
    """The alternative not taken: z and class logits optimised together, the DCGAN's one-hot input
    replaced by softmax(logits) (the eyes net reads [z, one-hot] as its input). Returns (argmax classes,
    PSNR when re-rendered with the argmax class)."""
    model = space_model(eyes, "z")
    count = targets.shape[0]
    z = model.screen(targets, mse, candidates=64, seed=seed, classes=torch.zeros(count, dtype=torch.long))[:, 0]
    z.requires_grad_(True)
    logits = torch.zeros(count, eyes.num_classes, requires_grad=True)
    adam = torch.optim.Adam([z, logits], lr=0.1)
    schedule = Schedule(steps, 0.1, 0.05, 0.25, 0.3)
    network = eyes._inference  # the adapter's folded network, fed [z, soft one-hot]
    for step in range(steps):
        for group in adam.param_groups:
            group["lr"] = schedule.lr_at(step)
        noisy = z + schedule.noise_at(step) * torch.randn_like(z)
        images = network(torch.cat([noisy, logits.softmax(1)], 1)[:, :, None, None])
        loss = (images - targets).square().flatten(1).mean(1).sum()
        adam.zero_grad()
        loss.backward()
        adam.step()
        with torch.no_grad():
            model.project(z)
    found = logits.argmax(1)
    with torch.no_grad():
        images = eyes.synthesize(z.detach(), classes=found)
    return found, psnr(images, targets)


def bench_classes(count: int = 16, steps: int = 60, starts: int = 1, search: float = 0.2, seeds: tuple = (0,),
                  first_seed: int = 500, softmax: bool = True) -> None:
    """The class of ``count`` dcgan-eyes images G(z, c) of known class (seeds ``first_seed``…, class k mod 8),
    MSE, no feature offset (the class is then decided at the end), each inversion ``seed``: the rule before
    issue 13 (each image's best class at the search's end), the finalist race (2 classes raced to the end),
    the soft class read from the first layer (``class_search="soft"``), and the softmax soft class
    of the bench (argmax). Hits, row-steps per image, wall time."""
    invert_module = importlib.import_module("latentdirs.invert")  # the module: latentdirs.invert is also the function

    eyes = latentdirs.load_generator("dcgan-eyes", device="cpu")
    torch.set_num_threads(2)
    truth = torch.arange(count) % eyes.num_classes
    with torch.no_grad():
        targets = eyes.synthesize(eyes.sample_seeds(list(range(first_seed, first_seed + count))), classes=truth)
    figures, rows = {}, []
    rules = (("best class at the search's end (before)", 1, False),
             ("2 finalists raced to the end (default)", 2, False),
             ("soft class read from the first layer (class_search='soft')", 2, True))
    default_finalists = invert_module.FINALISTS
    for name, finalists, soft in rules:
        for seed in seeds:
            invert_module.FINALISTS = finalists
            totals: list[int] = []
            try:
                started = time.perf_counter()
                found = invert_tensors(eyes, targets, steps=steps, search=search, loss="mse", starts=starts,
                                       feature_offset=False, seed=seed, class_search="soft" if soft else "race",
                                       progress=lambda _, total: totals.append(total))
                seconds = time.perf_counter() - started
            finally:
                invert_module.FINALISTS = default_finalists
            hits = sum(int(c == t) for c, t in zip(found.classes, truth.tolist()))
            wrong = [(k, c) for k, (c, t) in enumerate(zip(found.classes, truth.tolist())) if c != t]
            figures[f"{name}, seed {seed}"] = {"hits": hits, "classes": found.classes, "psnr": found.psnr.tolist(),
                                               "row_steps_per_image": totals[-1] / count, "seconds": seconds}
            rows.append((f"{name}, seed {seed}", f"{hits}/{count} classes (wrong: {wrong}), {totals[-1] / count:.0f} "
                         f"row-steps per image, PSNR median {float(found.psnr.median()):.1f} dB, {seconds:.0f} s"))
    if softmax:
        started = time.perf_counter()
        soft_classes, soft_psnr = _soft_class_inversion(eyes, targets, steps)
        soft_seconds = time.perf_counter() - started
        soft_hits = int((soft_classes == truth).sum())
        figures["softmax"] = {"hits": soft_hits, "psnr": soft_psnr.tolist(), "seconds": soft_seconds}
        rows.append(("softmax class vector, argmax (seed 0)", f"{soft_hits}/{count} classes, {steps} row-steps per "
                     f"image, PSNR median {float(soft_psnr.median()):.1f} dB (re-rendered with its argmax class), "
                     f"{soft_seconds:.0f} s"))
    report(f"class of dcgan-eyes images ({count} seeds from {first_seed}, class k mod 8, {steps} steps, search "
           f"{search}, {starts} start(s), MSE)", rows, as_json=figures)


def bench_classes_at_defaults(count: int = 16, chunk: int = 4, first_seed: int = 500, seed: int = 0,
                              rules: tuple = ("race", "soft")) -> None:
    """The class of ``count`` dcgan-eyes images G(z, c) of known class (seeds ``first_seed``…, class k mod 8)
    at the default inversion settings (500 steps, the 4-start search, the default loss, the feature offset),
    for each ``class_search`` rule. The images are inverted ``chunk`` at a time (inversion seed ``seed`` +
    the chunk's first index, as a resumed ``invert`` seeds its batches), each chunk's classes printed as it
    ends, so a long run on a slow machine reports as it goes. Hits, PSNR, row-steps per image, wall time."""
    eyes = latentdirs.load_generator("dcgan-eyes", device="cpu")
    truth = torch.arange(count) % eyes.num_classes
    with torch.no_grad():
        targets = eyes.synthesize(eyes.sample_seeds(list(range(first_seed, first_seed + count))), classes=truth)
    figures, rows = {}, []
    for rule in rules:
        found_classes: list[int] = []
        psnr: list[float] = []
        row_steps, seconds = 0, 0.0
        for first in range(0, count, chunk):
            totals: list[int] = []
            started = time.perf_counter()
            found = invert_tensors(eyes, targets[first:first + chunk], seed=seed + first, class_search=rule,
                                   progress=lambda _, total: totals.append(total))
            seconds += time.perf_counter() - started
            row_steps += totals[-1]
            found_classes += found.classes
            psnr += found.psnr.tolist()
            print(json.dumps({"rule": rule, "first": first, "classes": found.classes,
                              "truth": truth[first:first + chunk].tolist(), "psnr": found.psnr.tolist(),
                              "seconds": round(seconds, 1)}), flush=True)
        hits = sum(int(c == t) for c, t in zip(found_classes, truth.tolist()))
        wrong = [(k, c) for k, (c, t) in enumerate(zip(found_classes, truth.tolist())) if c != t]
        figures[rule] = {"hits": hits, "classes": found_classes, "psnr": psnr, "row_steps_per_image": row_steps / count,
                         "seconds": seconds}
        rows.append((f"class_search={rule!r}", f"{hits}/{count} classes (wrong: {wrong}), {row_steps / count:.0f} "
                     f"row-steps per image, PSNR {min(psnr):.1f}–{max(psnr):.1f} dB, {seconds:.0f} s"))
    report(f"class of dcgan-eyes images at the defaults ({count} seeds from {first_seed}, class k mod 8, "
           f"{torch.get_num_threads()} thread(s), chunks of {chunk})", rows, as_json=figures)


SECTIONS = {"photo": bench_photo, "seeds": bench_seeds, "batch": bench_batch, "lord": bench_lord,
            "losses": bench_losses, "classes": bench_classes,
            "classes-defaults": bench_classes_at_defaults}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        _child_batch(argv[1], int(argv[2]), int(argv[3]))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (set to 2)")
    for name in argv or list(SECTIONS):
        SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
