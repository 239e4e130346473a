"""OroJaR benchmarks (issue 5) on dcgan-faces, 2 CPU threads.

Run: ``.venv/bin/python -m benchmarks.bench_orojar`` (about 10 minutes).

1. Steps per second of one discovery step (penalty + backward + Adam) at batch 32, k = 2, for the
   straightforward form (the network as loaded, separate forward passes, every pass recorded for
   autograd, as the reference) and this project's variants (the adapter's BatchNorm-folded network),
   interleaved in one run, after checking that all give the same penalty for the same latents and
   probes.
2. Time to quality: the penalty on a fixed held-out set (64 latents, 8 probes) along training from a
   random (Kaiming) start and from the SeFa warm start, and the training time each needs to reach the
   best held-out penalty the random start reached.
3. Peak resident memory of a default ``latentdirs discover dcgan-faces -m orojar`` and its wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import latentdirs
from benchmarks.common import peak_rss_mib, report
from latentdirs.methods.orojar import orthonormal_rows
from latentdirs.methods.orojar_penalty import orojar_penalty, rademacher, squared_norms


def reference_penalty(render, m: int, batch: int, probes: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The reference's form: G(z) and every G(z + ε v_i) as separate, autograd-recorded passes."""
    base = render(torch.zeros(batch, m))
    norms = torch.stack([squared_norms([(o - b) / epsilon for o, b in zip(render(epsilon * p), base)])
                         for p in probes])
    return norms.var(dim=0, unbiased=True).mean()


def bench_steps(faces, batch: int, k: int, steps: int) -> None:
    m = faces.z_dim
    matrix = torch.randn(m, m, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    optimiser = torch.optim.Adam([matrix], lr=0.01)
    draws = torch.Generator().manual_seed(1)
    latents = faces.sample(batch, seed=2)
    probes = rademacher((k, batch, m), draws, faces.device)

    def render_with(directions):
        return lambda w: [faces.synthesize(latents.repeat(w.shape[0] // batch, 1) + w @ directions)]

    def render_as_loaded(directions):  # the straightforward form calls the network as it was loaded
        return lambda w: [faces.network.main((latents + w @ directions)[:, :, None, None])]

    variants = {
        "reference form (all passes recorded)": lambda r: reference_penalty(r, m, batch, probes, 0.1),
        "latentdirs default (base pass without autograd)": lambda r: orojar_penalty(r, torch.zeros(batch, m), probes),
        "batched 1+k passes in one forward (option)": lambda r: orojar_penalty(r, torch.zeros(batch, m), probes,
                                                                              batched=True),
        "exact mode (forward-mode JVP)": lambda r: orojar_penalty(r, torch.zeros(batch, m), probes, mode="exact"),
    }
    compiled_synthesize = torch.compile(lambda x: faces.synthesize(x))

    def render_compiled(directions):
        return lambda w: [compiled_synthesize(latents + w @ directions)]

    variants["compile option (torch.compile, warm-up excluded)"] = variants[
        "latentdirs default (base pass without autograd)"]
    renderers = {name: render_with for name in variants}
    renderers["compile option (torch.compile, warm-up excluded)"] = render_compiled
    renderers["reference form (all passes recorded)"] = render_as_loaded
    values = {}
    for name, penalty in variants.items():
        values[name] = penalty(renderers[name](orthonormal_rows(matrix))).item()
    reference_value = next(iter(values.values()))
    rows = [(f"penalty, {name}", f"{value:.6g} (rel. diff {abs(value / reference_value - 1):.1e})")
            for name, value in values.items()]

    def one_step(penalty, renderer) -> None:
        loss = penalty(renderer(orthonormal_rows(matrix)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    times: dict[str, float] = {name: float("inf") for name in variants}
    for name, penalty in variants.items():
        one_step(penalty, renderers[name])  # warm-up
    for _ in range(3):
        for name, penalty in variants.items():
            started = time.perf_counter()
            for _ in range(steps):
                one_step(penalty, renderers[name])
            times[name] = min(times[name], (time.perf_counter() - started) / steps)
    base = times["reference form (all passes recorded)"]
    for name, seconds in times.items():
        rows.append((f"steps/s, {name}", f"{1 / seconds:.2f}  ({base / seconds:.2f}x)"))
    report(f"OroJaR step speed, dcgan-faces, batch {batch}, k {k} (best of 3 x {steps} steps, interleaved)", rows)


def held_out_penalty(faces, vectors: torch.Tensor, samples: int = 64, probes_k: int = 8) -> float:
    """The penalty of a full basis on a fixed held-out set (64 latents, 8 probes): a steadier yardstick
    than the training penalty (batch 16, k 2). Row order and signs do not change it."""
    latents = faces.sample(samples, seed=123_457)
    probes = rademacher((probes_k, samples, faces.z_dim), torch.Generator().manual_seed(5), faces.device)
    with torch.no_grad():
        return orojar_penalty(lambda w: [faces.synthesize(latents + w @ vectors)],
                              torch.zeros(samples, faces.z_dim), probes).item()


def bench_time_to_quality(faces, steps: int, batch: int, every: int, workdir: Path) -> None:
    rows = []
    curves = {}
    for start in ("random", "sefa"):
        checkpoint = workdir / f"{start}.ckpt"
        points, training_time = [], 0.0
        for done in range(0, steps + 1, every):
            began = time.perf_counter()
            directions = latentdirs.discover(faces, "orojar", steps=done, batch_size=batch, warm_start=start,
                                             checkpoint=checkpoint if done else None, checkpoint_every=every,
                                             resume=done > every)
            training_time += time.perf_counter() - began
            points.append((done, training_time, held_out_penalty(faces, directions.vectors)))
        curves[start] = points
        rows.append((f"{start} start: held-out penalty at steps {', '.join(str(p[0]) for p in points)}",
                     ", ".join(f"{p[2]:.3g}" for p in points)))
    goal = min(p[2] for p in curves["random"])  # the best the random start reached
    for start, points in curves.items():
        reached = next((p for p in points if p[2] <= goal), None)
        rows.append((f"{start} start: time to the random start's best ({goal:.3g})",
                     f"{reached[1]:.1f} s (step {reached[0]})" if reached else "not reached"))
    report(f"OroJaR time to quality, dcgan-faces, batch {batch}, lr 0.01 (held-out penalty)", rows)


def bench_default_run(workdir: Path) -> None:
    out = workdir / "oj.safetensors"
    started = time.perf_counter()
    peak, _ = peak_rss_mib([sys.executable, "-m", "latentdirs.cli.main", "discover", "dcgan-faces", "-m", "orojar",
                            "--device", "cpu", "-o", str(out)])
    elapsed = time.perf_counter() - started
    options = latentdirs.Directions.load(out).meta["method"]["options"]
    report("default 'latentdirs discover dcgan-faces -m orojar'", [
        ("steps, batch", f"{options['steps']}, {options['batch_size']}"),
        ("wall time", f"{elapsed / 60:.1f} min"), ("peak RSS", f"{peak:.0f} MiB"),
        ("final penalty", f"{options['final_penalty']:.4g}")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps everywhere")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    bench_steps(faces, batch=32, k=2, steps=3 if args.quick else 8)
    with tempfile.TemporaryDirectory() as workdir:
        bench_time_to_quality(faces, steps=40 if args.quick else 400, batch=16, every=20 if args.quick else 100,
                              workdir=Path(workdir))
        bench_default_run(Path(workdir))


if __name__ == "__main__":
    main()
