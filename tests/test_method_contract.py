"""The discovery-method contract, run over every registered method on ``synthetic``.

Each method gets small, fast options in :data:`METHOD_CONFIGS`; a registered method without one fails
the suite. Every method must give unit rows with canonical signs (largest-magnitude entry positive),
the same vectors, scores and header for the same seed (the ``created`` timestamp aside), refuse
``num_directions`` 0 and K+1 (K: the number it finds by default) naming the option, and refuse an
unknown option by its name.
"""

from __future__ import annotations

import pytest
import torch

import latentdirs
from latentdirs.directions import read_header
from latentdirs.errors import LatentDirsError, UnknownNameError
from latentdirs.registry import accepted_options, get_method, list_methods

#: method → options small enough that two runs on synthetic take about a second or two
METHOD_CONFIGS: dict[str, dict] = {
    "sefa": {},
    "orojar": {"steps": 1, "batch_size": 2, "subspace": "0-3", "seed": 3},
    "regression": {"samples": 2, "iterations": 1, "epochs": 1, "recalibrate": 0, "amounts": [0.1], "seed": 3},
    "ganspace": {"samples": 300, "regression_samples": 300, "seed": 3},
    # a continuous attribute: a class-labelled boundary points to the positive class, not the canonical sign
    "interfacegan": {"attribute": "brightness", "samples": 60, "seed": 3},
}


def _config(name: str) -> dict:
    if name not in METHOD_CONFIGS:
        pytest.fail(f"method {name!r} is registered but tests/test_method_contract.py has no configuration "
                    "for it: add small, fast options to METHOD_CONFIGS")
    return METHOD_CONFIGS[name]


@pytest.fixture(scope="module", params=list(list_methods()))
def method_runs(request, synthetic, tmp_path_factory):
    """``(name, options, first run, second run, their saved headers)``: two runs with the same seed."""
    name = request.param
    options = _config(name)
    runs = [latentdirs.discover(synthetic, name, **options) for _ in range(2)]
    folder = tmp_path_factory.mktemp(f"method-{name}")
    headers = [read_header(run.save(folder / f"run{i}.safetensors")) for i, run in enumerate(runs)]
    return name, options, runs, headers


def test_every_registered_method_has_a_configuration():
    missing = sorted(set(list_methods()) - set(METHOD_CONFIGS))
    assert not missing, f"registered methods without a configuration in tests/test_method_contract.py: {missing}"


def test_unit_rows(method_runs):
    _, _, (directions, _), _ = method_runs
    norms = directions.vectors.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)


def test_canonical_signs(method_runs):
    _, _, (directions, _), _ = method_runs
    if directions.meta.get("calibration"):
        pytest.skip("a calibrated direction's sign is that of its calibration (positive = more of the factor)")
    vectors = directions.vectors
    peaks = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    assert (peaks > 0).all(), "each direction's largest-magnitude entry must be positive"


def test_same_seed_same_result(method_runs):
    _, _, (first, second), (header_a, header_b) = method_runs
    assert torch.equal(first.vectors, second.vectors)
    assert (first.scores is None) == (second.scores is None)
    if first.scores is not None:
        assert torch.equal(first.scores, second.scores)
    assert first.calibration.keys() == second.calibration.keys()
    assert all(torch.equal(first.calibration[k], second.calibration[k]) for k in first.calibration)
    header_a.pop("created", None)
    header_b.pop("created", None)
    assert header_a == header_b


def test_num_directions_bounds(method_runs, synthetic):
    name, options, (directions, _), _ = method_runs
    found = len(directions)
    for bad in (0, found + 1):
        with pytest.raises(LatentDirsError, match="num_directions"):
            latentdirs.discover(synthetic, name, **{**options, "num_directions": bad})
    if "num_directions" in accepted_options(get_method(name)):
        kept = latentdirs.discover(synthetic, name, **{**options, "num_directions": 1})
        assert len(kept) == 1 and torch.equal(kept.vectors[0], directions.vectors[0])


def test_unknown_option_refused_by_name(method_runs, synthetic):
    name, options, _, _ = method_runs
    with pytest.raises(UnknownNameError, match=f"{name} option: got 'no_such_option'"):
        latentdirs.discover(synthetic, name, **options, no_such_option=1)
