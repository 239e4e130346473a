"""Editing maths and batched traversal."""

from __future__ import annotations

import pytest
import torch

import latentdirs
from latentdirs.directions import Directions
from latentdirs.errors import InvalidValueError, OutOfRangeError


def test_shift_flat(synthetic_sefa):
    z = torch.zeros(3, 16)
    moved = latentdirs.shift(z, synthetic_sefa, index=2, alpha=torch.tensor([1.0, 2.0, -1.0]))
    torch.testing.assert_close(moved, torch.tensor([[1.0], [2.0], [-1.0]]) * synthetic_sefa.vectors[2])
    assert torch.equal(z, torch.zeros(3, 16)), "input must not be modified"


def test_shift_layered_applies_to_chosen_layers_only():
    directions = Directions(torch.eye(4)[:2], meta={"space": "w+", "layers": [1, 3]})
    latents = torch.zeros(2, 5, 4)
    moved = latentdirs.shift(latents, directions, index=1, alpha=2.0)
    assert moved[:, [1, 3], 1].eq(2.0).all()
    assert moved[:, [0, 2, 4]].eq(0).all()
    everywhere = latentdirs.shift(latents, directions.vectors, index=0, alpha=1.0)
    assert everywhere[..., 0].eq(1.0).all()
    with pytest.raises(OutOfRangeError, match="layers: got \\[7\\]; allowed: 0-4"):
        latentdirs.shift(latents, directions.vectors, index=0, alpha=1.0, layers=[7])


def test_shift_refuses_bad_index_and_shape(synthetic_sefa):
    with pytest.raises(OutOfRangeError, match="index: got 16; allowed: 0-15"):
        latentdirs.shift(torch.zeros(1, 16), synthetic_sefa, index=16, alpha=1.0)
    with pytest.raises(InvalidValueError, match="last dimension 16"):
        latentdirs.shift(torch.zeros(1, 8), synthetic_sefa, index=0, alpha=1.0)


def test_traverse_batches_order_and_content(synthetic, synthetic_sefa):
    seeds, indices, alphas = [3, 5], [0, 1], [-1.0, 0.0, 2.0]
    batches = list(latentdirs.traverse(synthetic, synthetic_sefa, seeds=seeds, indices=indices,
                                       alphas=alphas, batch_size=5))
    assert [len(b.items) for b in batches] == [5, 5, 2]
    items = [item for b in batches for item in b.items]
    assert [(i.index, i.seed, i.alpha) for i in items] == [
        (d, s, a) for d in indices for s in seeds for a in alphas]
    images = torch.cat([b.images for b in batches])
    # every tile equals a direct render of shift(z_seed, d, alpha)
    for k, item in enumerate(items):
        z = synthetic.sample_seeds([item.seed])
        expected = synthetic.synthesize(latentdirs.shift(z, synthetic_sefa, index=item.index, alpha=item.alpha))
        torch.testing.assert_close(images[k:k + 1], expected)
    # the strongest SeFa direction on synthetic is x: the disc moves right as alpha grows
    xs = [synthetic.factor_properties(synthetic.sample_seeds([3]) + a * synthetic_sefa.vectors[0])["x"].item()
          for a in alphas]
    assert xs[0] < xs[1] < xs[2] or xs[0] > xs[1] > xs[2]


def test_traverse_conditional_rows_per_class(eyes):
    directions = latentdirs.discover(eyes, "sefa", num_directions=2)
    batches = list(latentdirs.traverse(eyes, directions, seeds=[0], indices=[0], alphas=[0.0],
                                       classes=["blue", 6]))
    items = batches[0].items
    assert [i.class_id for i in items] == [1, 6]
    assert not torch.allclose(batches[0].images[0], batches[0].images[1]), "classes must change the eye"


def test_traverse_refuses_bad_requests(synthetic, synthetic_sefa, eyes):
    with pytest.raises(OutOfRangeError, match="indices: got 99"):
        next(latentdirs.traverse(synthetic, synthetic_sefa, seeds=[0], indices=[99], alphas=[1.0]))
    with pytest.raises(InvalidValueError, match="batch_size: got 0"):
        next(latentdirs.traverse(synthetic, synthetic_sefa, seeds=[0], indices=[0], alphas=[1.0], batch_size=0))
    with pytest.raises(LookupError, match="class: got 'purple'; allowed: amber, blue, brown"):
        eyes.resolve_class("purple")
    with pytest.raises(OutOfRangeError, match="class: got 8; allowed: ids 0-7"):
        eyes.resolve_class(8)


def test_render_pages_grids_and_keeps_every_strip(synthetic, synthetic_sefa, tmp_path):
    from latentdirs.plan import EditPlan
    from latentdirs.render import Output, render_edits

    plan = EditPlan.build(synthetic, synthetic_sefa, seeds=[0, 1, 2], indices=[1, 3], alphas=[-1.0, 1.0])
    manifest = render_edits(synthetic, synthetic_sefa, plan, tmp_path, output=Output(max_rows=2), batch_size=3)
    grids = [r["file"] for r in manifest["images"] if r["kind"] == "grid"]
    assert grids == ["grid_d001_p0.png", "grid_d001_p1.png", "grid_d003_p0.png", "grid_d003_p1.png"]
    assert [len(r["rows"]) for r in manifest["images"] if r["kind"] == "grid"] == [2, 1, 2, 1]
    strips = sorted(p.name for p in (tmp_path / "strips").iterdir())
    assert strips == [f"d{d:03d}_seed{s}.png" for d in (1, 3) for s in (0, 1, 2)]
