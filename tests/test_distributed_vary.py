"""``latentdirs vary`` under torchrun (issue 19): two real gloo processes write, byte for byte, what one
process writes (grid pages, the split rank 0 computes, the manifest with its figures); the shards are
whole pages that begin on a batch boundary; more ranks than shards is refused in one line.

Both sides run with one thread per process: CPU kernels may round differently with another thread
count (docs/scale.md)."""

from __future__ import annotations

import pytest
import torch

from latentdirs.content_style import content_style_split
from latentdirs.distributed import Ranks
from latentdirs.errors import InvalidValueError
from latentdirs.vary import vary_shards, write_vary
from tests.test_distributed import _files, _free_port, _one_thread, _torchrun

#: 36 sources × (1 + 3) images in batches of 8: pages of 16 rows start at rows 0, 16, 32, all on a batch
#: boundary (64 images a page), so 3 shards; the last page is short (4 rows)
VARY = ["0-35", "-g", "synthetic", "--variations", "3", "--batch-size", "8", "--device", "cpu"]


@pytest.mark.parametrize("count, columns, batch, rows", [(36, 3, 8, 16), (40, 2, 5, 16), (5, 1, 3, 2), (1, 8, 32, 16),
                                                         (33, 4, 7, 4)])
def test_shards_are_whole_pages_starting_on_a_batch(count, columns, batch, rows):
    shards = vary_shards(count, columns, batch, rows)
    assert shards[0][0] == 0 and shards[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    assert all(start % rows == 0 and start * (columns + 1) % batch == 0 and stop > start for start, stop in shards)
    # every page start that is a batch boundary cuts: no shard is longer than it must be
    cuts = [r for r in range(0, count, rows) if r * (columns + 1) % batch == 0]
    assert [start for start, _ in shards] == cuts


def test_more_ranks_than_shards_is_refused_before_rendering(synthetic, tmp_path):
    split = content_style_split(synthetic, samples=8)
    ranks = Ranks(rank=0, world_size=3, local_rank=0, device=torch.device("cpu"))
    message = (r"^--nproc-per-node: got 3; allowed: at most 2, the number of shards \(runs of whole 16-source grid "
               r"pages that begin where a 8-image batch begins\) in this run\. Launch fewer processes, or give more "
               r"sources$")
    with pytest.raises(InvalidValueError, match=message):  # 20 rows: pages at 0 and 16, one process group unneeded
        write_vary(synthetic, split, list(range(20)), tmp_path / "out", variations=3, batch_size=8, ranks=ranks)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_only_rank_0_probes_the_output_directory(synthetic, tmp_path, monkeypatch):
    import importlib

    files = importlib.import_module("latentdirs.vary.files")  # `latentdirs.vary` is also the function's name

    probed: list[str] = []
    original = files.check_writable_directory

    def recorded(directory, **options):  # the real probe still runs
        probed.append(str(directory))
        return original(directory, **options)

    monkeypatch.setattr(files, "check_writable_directory", recorded)
    split = content_style_split(synthetic, samples=8)
    ranks = Ranks(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    # no process group here: rank 1 stops at its first collective, having probed nothing
    with pytest.raises((RuntimeError, ValueError), match="process group"):
        write_vary(synthetic, split, list(range(20)), tmp_path / "out", variations=3, batch_size=8, ranks=ranks)
    assert probed == []


@pytest.mark.slow
def test_torchrun_vary_writes_the_bytes_one_process_writes(cli_runner, tmp_path, monkeypatch):
    from tests.conftest import invoke

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the split file records its time: the same for both
    out = tmp_path / "out"
    arguments = ["vary", *VARY, "-o", str(out)]
    single = _one_thread(invoke, cli_runner, *arguments)
    assert single.exit_code == 0, single.output
    reference = _files(out)
    assert sorted(reference) == ["grid_p0.png", "grid_p1.png", "grid_p2.png", "manifest.json", "split.safetensors"]
    out.rename(tmp_path / "single")  # the same -o for both: the manifest's command names it
    sharded = _torchrun(arguments, _free_port())
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert sharded.stdout.count("wrote grid_p0.png") == 1  # rank 0 alone reports
    written = _files(out)
    assert sorted(written) == sorted(reference)
    for name, data in reference.items():
        assert written[name] == data, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the staging folder is gone

    refused = _torchrun(["vary", *VARY[:5], "--batch-size", "7", "--device", "cpu", "-o", str(tmp_path / "no")],
                        _free_port())  # 7 ∤ 64 and 7 ∤ 128: one shard only
    assert refused.returncode != 0
    assert ("Error: --nproc-per-node: got 2; allowed: at most 1, the number of shards (runs of whole 16-source grid "
            "pages that begin where a 7-image batch begins) in this run. Launch fewer processes") in refused.stderr


def _resume_worker(rank: int, port: int, folder: str) -> None:
    """One rank: a run interrupted as each rank writes its last page (rank 0: page 2, rank 1: page 1), then the
    rerun, which writes only the pages not journalled; the pages each rank wrote are saved beside."""
    import importlib
    import json
    import os
    from pathlib import Path

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), SOURCE_DATE_EPOCH="1700000000")
    torch.set_num_threads(1)
    import latentdirs
    module = importlib.import_module("latentdirs.vary.files")  # where the pages are written
    from latentdirs import distributed

    ranks = distributed.setup("cpu")
    synthetic = latentdirs.load_generator("synthetic", device=ranks.device)
    split = content_style_split(synthetic, samples=8)
    original, stop_at, written = module._write_page, {0: "grid_p2.png", 1: "grid_p1.png"}[rank], []

    def interrupted(staging, name, page):
        if name == stop_at:
            raise KeyboardInterrupt
        return original(staging, name, page)

    def counted(staging, name, page):
        written.append(name)
        return original(staging, name, page)

    arguments = dict(variations=3, batch_size=8, ranks=ranks)
    module._write_page = interrupted
    try:
        write_vary(synthetic, split, list(range(36)), Path(folder) / "out", **arguments)
    except KeyboardInterrupt:
        pass
    ranks.barrier()
    module._write_page = counted
    write_vary(synthetic, split, list(range(36)), Path(folder) / "out", **arguments)
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(written))
    ranks.barrier()  # leave together: no rank destroys the group while its peer may still be in a collective
    distributed.teardown()


@pytest.mark.slow
def test_interrupted_sharded_vary_resumes_to_the_one_process_bytes(synthetic, tmp_path, monkeypatch):
    import json

    import torch.multiprocessing as mp

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    split = _one_thread(content_style_split, synthetic, samples=8)  # as each rank computes it: one thread
    _one_thread(write_vary, synthetic, split, list(range(36)), tmp_path / "out", variations=3, batch_size=8)
    (tmp_path / "out").rename(tmp_path / "single")  # the same output directory for both: the manifest names it
    mp.spawn(_resume_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    # shard 0 (page 0) was journalled before the interruption: the rerun writes pages 2 and 1 only
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)] == [["grid_p2.png"],
                                                                                       ["grid_p1.png"]]
    reference, resumed = _files(tmp_path / "single"), _files(tmp_path / "out")
    assert sorted(resumed) == sorted(reference) and len(reference) == 5
    for name, data in reference.items():
        assert resumed[name] == data, name


def _gloo_threads() -> list[str]:
    """The names of this process's threads that belong to a gloo process group (Linux: /proc)."""
    import os
    from pathlib import Path

    names = [(Path("/proc/self/task") / task / "comm").read_text().strip() for task in os.listdir("/proc/self/task")]
    return sorted(name for name in names if "gloo" in name)


def _leave_worker(rank: int, port: int, folder: str) -> None:
    """One rank: rank 0 measures a split (as ``latentdirs vary`` does under torchrun), then both leave; the gloo
    threads each rank still has after :func:`~latentdirs.distributed.teardown` are saved."""
    import json
    import os
    from pathlib import Path

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import latentdirs
    from latentdirs import distributed

    ranks = distributed.setup("cpu")
    before = _gloo_threads()
    if ranks.is_main:  # its Jacobians (forward-mode AD) import torch._dynamo on first use
        content_style_split(latentdirs.load_generator("synthetic", device="cpu"), samples=2)
    ranks.barrier()
    distributed.teardown()
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"before": before, "after": _gloo_threads()}))


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="thread names are read from /proc")
def test_teardown_frees_the_group_after_a_split_was_measured(tmp_path):
    # a group that outlives teardown keeps its gloo threads into interpreter shutdown, where one releasing a
    # collective's tensors aborts the process ("terminate called without an active exception")
    import json

    import torch.multiprocessing as mp

    mp.spawn(_leave_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert all(report["before"] for report in reports)  # the group's threads were there, and are named so
    assert [report["after"] for report in reports] == [[], []]
