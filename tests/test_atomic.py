"""Output helpers under concurrency: the directory probe of several processes at once."""

from __future__ import annotations

import multiprocessing

import pytest

from latentdirs.atomic import check_writable_directory
from latentdirs.errors import OutputError


def _probe_many(directory: str, count: int) -> int:
    for _ in range(count):
        check_writable_directory(directory)
    return count


def test_processes_probing_one_directory_at_once_do_not_remove_each_others_probe(tmp_path):
    # the ranks of a launched run probe the same -o directory at the same moment; a shared probe name made
    # the one that unlinked second fail (8–12 of 2 000 probes with two processes)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap(_probe_many, [(str(tmp_path), 2000)] * 2)
    assert done == [2000, 2000]
    assert list(tmp_path.iterdir()) == []  # no probe left behind


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        check_writable_directory(tmp_path / "out")
