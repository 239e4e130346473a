"""The catalogue and the curated direction files shipped in checkpoints/."""

from __future__ import annotations

import torch

import latentdirs
from latentdirs.catalogue import catalogue, curated_file
from latentdirs.checkpoints.curate import LABELS, NUM_DIRECTIONS
from latentdirs.directions import Directions
from latentdirs.weights import package_file, sha256_of


def test_catalogue_checksums_match_installed_wheels():
    for entry in catalogue().values():
        if entry.package:
            path = package_file(entry.package, entry.file, pip_requirement=entry.pip)
            assert sha256_of(path) == entry.sha256, entry.name


def test_shipped_weights_match_their_checksums():
    from latentdirs.catalogue import checkpoints_dir

    shipped = [entry for entry in catalogue().values() if entry.package is None and entry.file]
    assert shipped, "the catalogue lists the weights trained here"
    for entry in shipped:
        path = checkpoints_dir() / entry.file
        assert path.stat().st_size <= 4 * 1024 * 1024, f"{entry.name}: shipped files stay within 4 MiB"
        assert sha256_of(path) == entry.sha256, entry.name
        assert entry.recipe, f"{entry.name}: a shipped file says how to reproduce it"


def test_curated_files_match_a_fresh_sefa_and_carry_labels(faces, eyes):
    for generator in (faces, eyes):
        name = catalogue()[generator.spec].curated_directions[0]
        shipped = Directions.load(curated_file(name), generator=generator)  # fingerprint checked
        fresh = latentdirs.discover(generator, "sefa", num_directions=NUM_DIRECTIONS)
        torch.testing.assert_close(shipped.vectors, fresh.vectors, atol=1e-5, rtol=0)
        assert shipped.labels == LABELS[generator.spec]
