"""latentdirs evaluate on synthetic: VP against the floor, ground truth, repeatability, grouping, errors."""

from __future__ import annotations

import json

import pytest
import torch

import latentdirs
from latentdirs.directions import Directions
from latentdirs.evaluation import evaluate
from tests.conftest import invoke

FAST = dict(top=5, pairs=800, epochs=6, vp_seeds=1, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    synthetic = latentdirs.load_generator("synthetic", device="cpu")
    truth = Directions.from_method(torch.stack(list(synthetic.true_directions.values())), None, generator=synthetic,
                                   method="truth", options={}, space="z")
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    broken = folder / "broken.safetensors"
    broken.write_bytes(b"not a direction file")
    return {"truth": truth.save(folder / "truth.safetensors"),
            "sefa": latentdirs.discover(synthetic, "sefa", num_directions=5).save(folder / "sefa.safetensors"),
            "faces": latentdirs.discover(faces, "sefa", num_directions=3).save(folder / "faces.safetensors"),
            "broken": broken}


@pytest.fixture(scope="module")
def results(files):
    return evaluate([files["truth"], files["faces"], files["broken"], files["sefa"]], device="cpu", **FAST)


def test_true_factors_beat_the_random_floor_and_are_found(results):
    synthetic = {r["file"].split("/")[-1]: r for r in results["generators"]["synthetic"]}
    truth = synthetic["truth.safetensors"]
    assert truth["vp"] > truth["vp_random_floor"] + 0.1, (truth["vp"], truth["vp_random_floor"])  # 0.86 vs 0.68
    assert [(row["factor"], row["best_index"]) for row in truth["ground_truth"]] == [
        ("x", 0), ("y", 1), ("size", 2), ("hue", 3), ("value", 4)]
    assert all(row["abs_cos"] > 0.999 and row["spread"] < 1.01 for row in truth["ground_truth"])
    assert all(0 < p["area"] <= 1 and p["change"] > 0 and not p["inert"] for p in truth["profile"])


def test_directions_that_do_nothing_are_marked_inert(synthetic, synthetic_sefa):
    from latentdirs.evaluation.profile import effect_profile

    # SeFa's rows 5-7 span the null space of synthetic's 5-factor first layer: their change is rounding
    profile = effect_profile(synthetic, synthetic_sefa.vectors[:8], seeds=2)
    assert [p["inert"] for p in profile] == [False] * 5 + [True] * 3
    assert all(p["linearity"] is None and p["area"] is None for p in profile[5:])
    assert min(p["change"] for p in profile[:5]) > 1e-3


def test_generators_apart_and_broken_file_reported(results, files):
    assert set(results["generators"]) == {"synthetic", "dcgan-faces"}
    assert [r["file"] for r in results["generators"]["dcgan-faces"]] == [str(files["faces"])]
    assert [e["file"] for e in results["errors"]] == [str(files["broken"])]
    assert "not a readable safetensors" in results["errors"][0]["error"]


def test_same_seed_same_numbers(files):
    quick = dict(FAST, top=3, pairs=200, epochs=1)
    first = evaluate([files["truth"]], device="cpu", **quick)
    again = evaluate([files["truth"]], device="cpu", **quick)
    strip = lambda r: json.dumps({k: v for k, v in r["generators"]["synthetic"][0].items() if k != "seconds"})  # noqa: E731
    assert strip(first) == strip(again)


def test_cli_table_json_and_report(files, tmp_path, cli_runner):
    args = ["evaluate", files["sefa"], "--top", "3", "--pairs", "200", "--epochs", "1", "--vp-seeds", "1"]
    table = invoke(cli_runner, *args)
    assert table.exit_code == 0 and "| sefa.safetensors | sefa | 3 |" in table.output
    data = json.loads(invoke(cli_runner, *args, "--json").output)
    assert data["generators"]["synthetic"][0]["method"] == "sefa"
    assert invoke(cli_runner, *args, "--report", tmp_path / "r").exit_code == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("<svg") >= 4 and "data:image/png;base64," in page and "http" not in page
    assert page.count('<div class="file">') == 1 and '<div class="files">' in page  # files in columns
    bad = invoke(cli_runner, *args, "--strength", "3:1")
    assert bad.exit_code == 2 and "--strength: got '3:1'" in bad.output and "LOW:HIGH" in bad.output


def test_calibrated_file_gets_its_accuracy_table_and_chart(calibrated, tmp_path):
    from latentdirs.evaluation.report import markdown, write_report

    path = calibrated[2]
    results = evaluate([path], device="cpu", **dict(FAST, top=3, pairs=200, epochs=1))
    item = results["generators"]["synthetic"][0]
    assert item["vp"] is None  # one direction: nothing to tell apart
    low, high = calibrated[1].meta["calibration"]["range"]
    reach = 0.5 * min(-low, high)  # requests up to half the calibrated range (≈ 0.16 of the width here)
    rows = {r["requested"]: r["mean"] for r in item["calibration"]}
    assert sorted(rows) == pytest.approx([-reach, -reach / 2, 0.0, reach / 2, reach])
    assert all(abs(rows[a] - a) < 0.01 for a in rows), rows  # shift-x edits land within 1 % of the width
    assert "Calibration of shift.safetensors" in markdown(results) and f"| {reach:+.3f} |" in markdown(results)
    page = write_report(results, tmp_path).read_text()
    assert page.count('alt="calibration chart"') == 1


def test_probe_amounts_stay_inside_half_the_range():
    from latentdirs.measure import probe_amounts

    assert probe_amounts({"range": [-0.2, 0.4]}) == pytest.approx([-0.1, -0.05, 0.0, 0.05, 0.1])
    assert probe_amounts({"range": [0.0, 0.3]}) is None  # a range that cannot go both ways
