"""Contract tests for the built-in adapters, plus each family's own checks."""

from __future__ import annotations

import pytest
import torch

from latentdirs.errors import OutOfRangeError, UnknownNameError
from tests.contract import AdapterContract


class TestFacesContract(AdapterContract):
    @pytest.fixture
    def generator(self, faces):
        return faces


class TestEyesContract(AdapterContract):
    @pytest.fixture
    def generator(self, eyes):
        return eyes


class TestSyntheticContract(AdapterContract):
    @pytest.fixture
    def generator(self, synthetic):
        return synthetic
