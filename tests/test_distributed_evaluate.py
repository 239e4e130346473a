"""evaluate's rendering under torchrun (issue 19): two real gloo CPU ranks share the VP pairs, the effect
profiles, the factor matrix and the calibration, and end with the one-process result, byte for byte
once the wall-clock ``seconds`` are left out; the refusals are one line.

Both sides run with one thread per process: CPU kernels may round differently with another thread
count (docs/scale.md)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest
import torch

import latentdirs
from latentdirs.directions import Directions
from latentdirs.distributed import Ranks
from latentdirs.errors import InvalidValueError
from latentdirs.evaluation import evaluate
from latentdirs.evaluation.sharing import check_units, mine, on_main, share, share_to_main
from latentdirs.evaluation.vp import _pair_differences, pair_batches
from tests.test_distributed import _free_port, _one_thread, _torchrun

REPO = Path(__file__).resolve().parent.parent
FACES = Path(str(resources.files("latentdirs.checkpoints") / "dcgan-faces-sefa.safetensors"))
#: 200 pairs: 4 batches (the last one of 8 pairs), dealt 0, 2 / 1, 3; 3 directions: profiles 0, 2 / 1
FAST = dict(top=3, pairs=200, epochs=1, vp_seeds=1, seed=0, factor_samples=8)
#: the VP images compared bit for bit: 3 batches of 64 pairs over 2 ranks (an uneven deal)
PAIRS = dict(count=150, strength=(1.5, 3.0), seed=4, space="z", layers=None, class_id=None)


def _without_seconds(results: dict) -> str:
    """The JSON the CLI prints (``--json``), less each file's wall-clock ``seconds``."""
    trimmed = {**results, "generators": {spec: [{k: v for k, v in item.items() if k != "seconds"} for item in items]
                                         for spec, items in results["generators"].items()}}
    return json.dumps(trimmed, indent=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic, calibrated):
    """A file per rendering phase: dcgan-faces (VP, profiles), synthetic's true factors (ground truth, exact
    matrix), a calibrated shift-x file (calibration re-measured), shapes-dcgan (matrix read off images)."""
    folder = tmp_path_factory.mktemp("evaluate-ranks")
    truth = Directions.from_method(torch.stack(list(synthetic.true_directions.values())), None, generator=synthetic,
                                   method="truth", options={}, space="z")
    shapes = latentdirs.load_generator("shapes-dcgan", device="cpu")
    return [str(FACES), str(truth.save(folder / "truth.safetensors")), str(calibrated[2]),
            str(latentdirs.discover(shapes, "sefa", num_directions=3).save(folder / "shapes.safetensors"))]


def _count_calls(module, names: list[str]) -> dict[str, int]:
    """Count the calls of ``module``'s functions ``names`` (the real functions still run)."""
    counts = dict.fromkeys(names, 0)

    def counting(name: str):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)
        return counted

    for name in names:
        setattr(module, name, counting(name))
    return counts


def _worker(rank: int, port: int, folder: str, paths: list[str]) -> None:
    """One rank: the sharded VP images (rank 0 saves them), then the sharded evaluate of ``paths``, counting
    the calibration's batches and registration chunks this rank computed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from latentdirs import distributed, measure

    calibration_work = _count_calls(measure, ["render_batch", "_register"])
    ranks = distributed.setup("cpu")
    faces = latentdirs.load_generator("dcgan-faces", device=ranks.device)
    vectors = Directions.load(FACES).vectors[:3]
    images, labels = _pair_differences(faces, [vectors, -vectors], ranks=ranks, **PAIRS)
    if ranks.is_main:
        torch.save({"images": images, "labels": labels}, Path(folder) / "pairs.pt")
    report = {"images_on_this_rank": images is not None}
    results = evaluate(paths, device="cpu", ranks=ranks, **FAST)
    report["results"] = _without_seconds(results)
    report["calibration_work"] = calibration_work
    report["gathered"] = ranks.gather(rank)  # the ranks are still in step after every phase
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(report))
    distributed.teardown()


@pytest.fixture(scope="module")
def two_ranks(files, tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("evaluate-two-ranks")
    mp.spawn(_worker, args=(_free_port(), str(folder), files), nprocs=2, join=True)
    return folder, [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_sharded_vp_pairs_are_the_one_process_images_bit_for_bit(faces, two_ranks):
    folder, reports = two_ranks
    vectors = Directions.load(FACES).vectors[:3]
    single, labels = _one_thread(_pair_differences, faces, [vectors, -vectors], **PAIRS)
    sharded = torch.load(folder / "pairs.pt")
    assert [r["images_on_this_rank"] for r in reports] == [True, False]  # gathered on rank 0 only
    assert torch.equal(sharded["labels"], labels)
    assert len(sharded["images"]) == 2 and sharded["images"][0].shape == (150, 3, 32, 32)
    for mine_, theirs in zip(sharded["images"], single):
        assert torch.equal(mine_, theirs)


@pytest.mark.slow
def test_sharded_evaluate_gives_the_one_process_json_on_every_rank(files, two_ranks):
    _, reports = two_ranks
    single = _one_thread(evaluate, files, device="cpu", **FAST)
    expected = _without_seconds(single)
    item = {Path(r["file"]).name: r for items in single["generators"].values() for r in items}
    # every phase ran: VP and profiles, ground truth, the exact and the read matrix, the calibration
    assert item["dcgan-faces-sefa.safetensors"]["vp"] is not None and len(item["truth.safetensors"]["profile"]) == 3
    assert item["truth.safetensors"]["factor_matrix"]["source"] == "true_directions"
    assert item["shapes.safetensors"]["factor_matrix"]["source"] == "read_factors"
    assert len(item["shift.safetensors"]["calibration"]) == 5 and not single["errors"]
    assert [r["results"] for r in reports] == [expected, expected]
    assert reports[0]["gathered"] == [0, 1]
    # the calibration was shared: 16 sources in 1 batch of 32 (rank 0) and 80 edits in 3 batches (0, 2 / 1);
    # 80 images of 64 px registered in chunks of 11, so 8 chunks (4 / 4)
    assert [r["calibration_work"] for r in reports] == [{"render_batch": 3, "_register": 4},
                                                        {"render_batch": 1, "_register": 4}]


@pytest.mark.slow
def test_torchrun_evaluate_prints_and_writes_what_one_process_does(cli_runner, tmp_path):
    from tests.conftest import invoke

    arguments = ["evaluate", str(FACES), "--top", "3", "--pairs", "128", "--epochs", "1", "--vp-seeds", "1",
                 "--device", "cpu", "--json"]
    single = _one_thread(invoke, cli_runner, *arguments, "--report", str(tmp_path / "one"))
    assert single.exit_code == 0, single.output
    sharded = _torchrun([*arguments, "--report", str(tmp_path / "two")], _free_port())
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    # rank 0 alone prints (one JSON document) and writes the report
    assert _without_seconds(json.loads(sharded.stdout)) == _without_seconds(json.loads(single.stdout))
    assert sharded.stderr.count("report: ") == 1
    one, two = (tmp_path / "one" / "report.html").read_bytes(), (tmp_path / "two" / "report.html").read_bytes()
    assert one == two and b"<svg" in two
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    refused = _torchrun(["evaluate", str(FACES), "--pairs", "64", "--device", "cpu", "--report",
                         str(tmp_path / "no")], _free_port())
    assert refused.returncode != 0 and not (tmp_path / "no").exists()
    assert ("Error: --nproc-per-node: got 2; allowed: at most 1, the number of batches of 64 VP pairs in this run. "
            "Launch fewer processes, or pass --pairs 128 or more") in refused.stderr


# ---------------------------------------------------------------------- the dealing, without processes
def test_units_are_dealt_round_robin_and_idle_ranks_are_refused_only_for_vp():
    ranks = [Ranks(rank=r, world_size=3, local_rank=r, device=torch.device("cpu")) for r in range(3)]
    assert [list(mine(7, r)) for r in ranks] == [[0, 3, 6], [1, 4], [2, 5]]
    assert list(mine(2, ranks[2])) == [] and list(mine(4, None)) == [0, 1, 2, 3]  # a phase may leave a rank idle
    assert [pair_batches(n) for n in (50, 64, 65, 200)] == [1, 1, 2, 4]
    with pytest.raises(InvalidValueError, match=r"^--nproc-per-node: got 3; allowed: at most 2, the number of "
                                                r"batches of 64 VP pairs in this run\. Launch fewer"):
        check_units(2, ranks[0], what="batches of 64 VP pairs", fix="Launch fewer processes")
    check_units(3, ranks[0], what="batches", fix="")
    check_units(1, None, what="batches", fix="")  # one process: nothing to refuse


def test_one_process_sharing_is_the_plain_loop():
    calls: list[int] = []
    assert share(3, lambda unit: calls.append(unit) or unit * 10, None) == [0, 10, 20] and calls == [0, 1, 2]
    assert share_to_main(2, lambda unit: [unit], None) == [[0], [1]]
    assert on_main(lambda: "rank 0", None) == "rank 0"


def test_more_ranks_than_vp_batches_is_refused_before_anything_runs():
    # no process group exists here: the refusal comes before any collective, file read or rendering
    ranks = Ranks(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    for pairs in (50, 64):
        with pytest.raises(InvalidValueError, match=r"^--nproc-per-node: got 2; allowed: at most 1, the number of "
                                                    r"batches of 64 VP pairs in this run\. .* --pairs 128 or more$"):
            evaluate(["no-such-file.safetensors"], ranks=ranks, pairs=pairs)
