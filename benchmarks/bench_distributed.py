"""Sharded edits (issue 19): images/s of one process against two ranks on this machine.

Run: ``.venv/bin/python -m benchmarks.bench_distributed`` (a few minutes on 2 quiet CPU cores;
``--only-vary``: a minute and a half).

Prints, each measured in this run on dcgan-faces (64×64), grids + strips + manifest written:
* the render phase (``render_edits`` / ``render_edits_sharded`` from call to return, generator already
  loaded; best of ``--repeat``): one process with 1 and with 2 threads; 1 and 2 ranks (gloo, spawned
  processes) with 1 thread each;
* the whole command, process start and generator load included: ``latentdirs edit`` against
  ``torchrun --nproc-per-node 2 -m latentdirs.cli edit`` (once each);
* evaluate's VP pair rendering (``--evaluate-pairs``, 3 renders a pair: unedited, file, random floor):
  one process against 1 and 2 ranks of 1 thread, with the time of the images' gather to rank 0 alone
  (``--only-evaluate``: just these);
* ``latentdirs vary`` (``write_vary`` from call to return: render, figures, grid pages, manifest; best of
  ``--repeat``) of ``--vary-sources`` seeds × (1 + ``--vary-variations``) images, from a content/style
  split measured once beforehand and read from its file (its measurement is timed apart): one process with
  1 and 2 threads, 1 and 2 ranks of 1 thread (``--only-vary``: just these).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import latentdirs
from benchmarks.common import report
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.plan import EditPlan
from latentdirs.render import render_edits

REPO = Path(__file__).resolve().parent.parent


def _plan(faces: GeneratorAdapter, directions: latentdirs.Directions, seeds: int, indices: int) -> EditPlan:
    return EditPlan.build(faces, directions, seeds=list(range(seeds)), indices=list(range(indices)),
                          alphas=[-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, world: int, port: int, seeds: int, indices: int, batch: int, repeat: int, result: str) -> None:
    """One spawned rank: best render time of ``repeat`` sharded edits (between barriers), written by rank 0."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from latentdirs import distributed
    from latentdirs.render import render_edits_sharded

    ranks = distributed.setup("cpu")
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    directions = latentdirs.discover(faces, "sefa", num_directions=indices)
    plan = _plan(faces, directions, seeds, indices)
    best = float("inf")
    with tempfile.TemporaryDirectory() as scratch:
        folder = ranks.broadcast(scratch)  # one output directory for all ranks
        for attempt in range(repeat):
            ranks.barrier()
            started = time.perf_counter()
            render_edits_sharded(faces, directions, plan, Path(folder) / f"run{attempt}", ranks, batch_size=batch)
            ranks.barrier()
            best = min(best, time.perf_counter() - started)
        ranks.barrier()  # rank 0's folder outlives every rank's last write
    if ranks.is_main:
        Path(result).write_text(json.dumps(best))
    distributed.teardown()


def render_phase(world: int, seeds: int, indices: int, batch: int, repeat: int) -> float:
    """Best seconds of the sharded render over ``world`` spawned ranks (1 thread each)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "best.json"
        mp.spawn(_rank, args=(world, _free_port(), seeds, indices, batch, repeat, str(result)), nprocs=world)
        return float(json.loads(result.read_text()))


def single_phase(threads: int, seeds: int, indices: int, batch: int, repeat: int) -> float:
    """Best seconds of ``render_edits`` in this process with ``threads`` threads."""
    torch.set_num_threads(threads)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    directions = latentdirs.discover(faces, "sefa", num_directions=indices)
    plan = _plan(faces, directions, seeds, indices)
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            render_edits(faces, directions, plan, out, batch_size=batch)
            best = min(best, time.perf_counter() - started)
    return best


def whole_commands(seeds: int, indices: int, batch: int) -> dict[str, float]:
    """Wall seconds of the CLI, one process (2 threads) and torchrun with 2 ranks (1 thread each)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        faces = latentdirs.load_generator("dcgan-faces", device="cpu")
        path = latentdirs.discover(faces, "sefa", num_directions=indices).save(folder / "faces.safetensors")
        edit = ["edit", str(path), "--indices", f"0-{indices - 1}", "--seeds", f"0-{seeds - 1}", "--batch-size",
                str(batch), "--device", "cpu"]
        commands = {
            "latentdirs edit (1 process, 2 threads)": ([sys.executable, "-m", "latentdirs.cli"], "2"),
            "torchrun --nproc-per-node 2 (1 thread each)": ([sys.executable, "-m", "torch.distributed.run",
                                                             "--nproc-per-node", "2", "--master-port",
                                                             str(_free_port()), "-m", "latentdirs.cli"], "1"),
        }
        times = {}
        for number, (name, (command, threads)) in enumerate(commands.items()):
            environment = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
            started = time.perf_counter()
            subprocess.run(command + edit + ["-o", str(folder / f"out{number}")], check=True, env=environment,
                           capture_output=True, cwd=REPO)
            times[name] = time.perf_counter() - started
        return times


def _evaluate_rank(rank: int, world: int, port: int, pairs: int, repeat: int, result: str) -> None:
    """One spawned rank: best time of evaluate's VP pair rendering (dealt batches, images gathered on rank 0),
    and of the gather alone (the same images sent again), between barriers; written by rank 0."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from latentdirs import distributed
    from latentdirs.evaluation.sharing import share_to_main
    from latentdirs.evaluation.vp import _pair_differences

    ranks = distributed.setup("cpu")
    faces, vectors = _evaluate_inputs()
    best = {"render": float("inf"), "gather": float("inf")}
    for _ in range(repeat):
        ranks.barrier()
        started = time.perf_counter()
        sets, _ = _pair_differences(faces, vectors, count=pairs, ranks=ranks, **_PAIR_OPTIONS)
        ranks.barrier()
        best["render"] = min(best["render"], time.perf_counter() - started)
        share = -(-pairs // 64)
        payload = [torch.zeros(min(64, pairs - 64 * unit), 3, 32, 32) for unit in range(share)]
        ranks.barrier()
        started = time.perf_counter()
        share_to_main(share, lambda unit: [payload[unit].clone() for _ in vectors], ranks)  # no pickle memo
        ranks.barrier()
        best["gather"] = min(best["gather"], time.perf_counter() - started)
    if ranks.is_main:
        Path(result).write_text(json.dumps(best))
    distributed.teardown()


#: evaluate's VP pairs as evaluate_directions renders them: the file's directions and a random floor
_PAIR_OPTIONS = dict(strength=(1.5, 3.0), seed=0, space="z", layers=None, class_id=None)


def _evaluate_inputs() -> tuple[GeneratorAdapter, list[torch.Tensor]]:
    from latentdirs.evaluation.vp import random_basis

    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    vectors = latentdirs.discover(faces, "sefa", num_directions=8).vectors
    return faces, [vectors, random_basis(8, vectors.shape[1], 1000)]


def evaluate_phase(world: int, pairs: int, repeat: int) -> dict[str, float]:
    """Best seconds of evaluate's VP pair rendering: in this process (``world`` 0, 1 thread) or over
    ``world`` spawned ranks of 1 thread (then also the gather of the images alone)."""
    import torch.multiprocessing as mp

    if world == 0:
        from latentdirs.evaluation.vp import _pair_differences

        torch.set_num_threads(1)
        faces, vectors = _evaluate_inputs()
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            _pair_differences(faces, vectors, count=pairs, **_PAIR_OPTIONS)
            best = min(best, time.perf_counter() - started)
        return {"render": best}
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "best.json"
        mp.spawn(_evaluate_rank, args=(world, _free_port(), pairs, repeat, str(result)), nprocs=world)
        return json.loads(result.read_text())


#: Jacobians the benchmark's split measures (the default, 64, takes a minute here; the rendering timed after
#: it does not depend on how well the split was measured)
VARY_SPLIT_SAMPLES = 16


def vary_split(folder: Path) -> tuple[Path, float]:
    """dcgan-faces' content/style split measured once (1 thread, :data:`VARY_SPLIT_SAMPLES` samples) and saved
    in ``folder``: its path and the seconds its measurement took."""
    from latentdirs.content_style import content_style_split

    torch.set_num_threads(1)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    started = time.perf_counter()
    split = content_style_split(faces, samples=VARY_SPLIT_SAMPLES)
    seconds = time.perf_counter() - started
    return split.save(folder / "split.safetensors"), seconds


def _timed_vary(faces: GeneratorAdapter, split_path: Path, out: Path, sources: int, variations: int, batch: int,
                ranks=None) -> float:
    """Seconds of one ``write_vary`` into ``out`` (the split read from ``split_path``, not timed)."""
    from latentdirs.content_style import ContentStyleSplit
    from latentdirs.vary import write_vary

    split = ContentStyleSplit.load(split_path, faces)
    if ranks is not None:
        ranks.barrier()
    started = time.perf_counter()
    write_vary(faces, split, list(range(sources)), out, variations=variations, batch_size=batch, split_path=split_path,
               ranks=ranks)
    if ranks is not None:
        ranks.barrier()  # the slowest rank's time
    return time.perf_counter() - started


def _vary_rank(rank: int, world: int, port: int, split_path: str, sources: int, variations: int, batch: int,
               repeat: int, result: str) -> None:
    """One spawned rank: best time of ``repeat`` sharded ``write_vary`` runs, written by rank 0."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from latentdirs import distributed

    ranks = distributed.setup("cpu")
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    folder = Path(split_path).parent  # every rank writes into the same output directories
    best = min(_timed_vary(faces, Path(split_path), folder / f"vary-{world}-{attempt}", sources, variations, batch,
                           ranks) for attempt in range(repeat))
    if ranks.is_main:
        Path(result).write_text(json.dumps(best))
    ranks.barrier()  # leave together, as the tests' workers do: no rank destroys the group mid-collective
    distributed.teardown()


def vary_phase(world: int, split_path: Path, sources: int, variations: int, batch: int, repeat: int,
               threads: int = 1) -> float:
    """Best seconds of ``write_vary``: in this process with ``threads`` threads (``world`` 0), or over ``world``
    spawned ranks of 1 thread."""
    import torch.multiprocessing as mp

    if world == 0:
        torch.set_num_threads(threads)
        faces = latentdirs.load_generator("dcgan-faces", device="cpu")
        with tempfile.TemporaryDirectory() as out:
            return min(_timed_vary(faces, split_path, Path(out) / f"run{attempt}", sources, variations, batch)
                       for attempt in range(repeat))
    result = split_path.parent / f"best-{world}.json"
    mp.spawn(_vary_rank, args=(world, _free_port(), str(split_path), sources, variations, batch, repeat, str(result)),
             nprocs=world)
    return float(json.loads(result.read_text()))


def vary_figures(sources: int, variations: int, batch: int, repeat: int) -> None:
    """Measure and print the vary table."""
    total = sources * (variations + 1)
    with tempfile.TemporaryDirectory() as scratch:
        split_path, split_seconds = vary_split(Path(scratch))
        phases = {"1 process, 1 thread": vary_phase(0, split_path, sources, variations, batch, repeat, 1),
                  "1 process, 2 threads": vary_phase(0, split_path, sources, variations, batch, repeat, 2),
                  "1 rank (sharded path), 1 thread": vary_phase(1, split_path, sources, variations, batch, repeat),
                  "2 ranks, 1 thread each": vary_phase(2, split_path, sources, variations, batch, repeat)}
    base = phases["1 process, 1 thread"]
    pages = -(-sources // 16)
    report(f"vary, dcgan-faces, {sources} sources x {variations + 1} = {total} images, batch {batch}, {pages} pages "
           f"(best of {repeat}; the split, {VARY_SPLIT_SAMPLES} samples, measured once beforehand: "
           f"{split_seconds:.1f} s)",
           [(name, f"{total / seconds:.0f} img/s ({base / seconds:.2f}x, {seconds:.2f} s)")
            for name, seconds in phases.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--indices", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--evaluate-pairs", type=int, default=1024, help="VP pairs of the evaluate figures")
    parser.add_argument("--only-evaluate", action="store_true", help="Measure evaluate's rendering only")
    parser.add_argument("--vary-sources", type=int, default=64, help="seeds of the vary figures")
    parser.add_argument("--vary-variations", type=int, default=7, help="variations per source of the vary figures")
    parser.add_argument("--only-vary", action="store_true", help="Measure vary only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    if args.only_vary:
        vary_figures(args.vary_sources, args.vary_variations, args.batch_size, args.repeat)
        print(f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share this machine)")
        return
    pairs = args.evaluate_pairs
    figures = {name: evaluate_phase(world, pairs, args.repeat) for name, world in
               (("1 process, 1 thread", 0), ("1 rank, 1 thread", 1), ("2 ranks, 1 thread each", 2))}
    base = figures["1 process, 1 thread"]["render"]
    report(f"evaluate's VP pairs, dcgan-faces, {pairs} pairs x 3 renders (best of {args.repeat})",
           [(name, f"{3 * pairs / f['render']:.0f} img/s ({base / f['render']:.2f}x)"
             + (f", gather alone {f['gather'] * 1e3:.0f} ms" if "gather" in f else "")) for name, f in figures.items()])
    if args.only_evaluate:
        return
    total = args.seeds * args.indices * 7
    shape = (args.seeds, args.indices, args.batch_size, args.repeat)
    phases = {"1 process, 1 thread": single_phase(1, *shape), "1 process, 2 threads": single_phase(2, *shape),
              "1 rank (sharded path), 1 thread": render_phase(1, *shape),
              "2 ranks, 1 thread each": render_phase(2, *shape)}
    base = phases["1 process, 1 thread"]
    report(f"render phase, dcgan-faces, {total} images, batch {args.batch_size} (best of {args.repeat})",
           [(name, f"{total / seconds:.0f} img/s ({base / seconds:.2f}x)") for name, seconds in phases.items()])
    commands = whole_commands(args.seeds, args.indices, args.batch_size)
    report(f"whole command, {total} images (process start and generator load included, once each)",
           [(name, f"{seconds:.1f} s ({total / seconds:.0f} img/s)") for name, seconds in commands.items()])
    vary_figures(args.vary_sources, args.vary_variations, args.batch_size, args.repeat)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share this machine)")


if __name__ == "__main__":
    main()
