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


def test_curated_files_match_a_fresh_sefa_and_carry_labels(faces, eyes):
    for generator in (faces, eyes):
        name = catalogue()[generator.spec].curated_directions[0]
        shipped = Directions.load(curated_file(name), generator=generator)  # fingerprint checked
        fresh = latentdirs.discover(generator, "sefa", num_directions=NUM_DIRECTIONS)
        torch.testing.assert_close(shipped.vectors, fresh.vectors, atol=1e-5, rtol=0)
        assert shipped.labels == LABELS[generator.spec]
