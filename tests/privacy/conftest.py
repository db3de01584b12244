"""Fixtures for the privacy tests: a throwaway PKI and FATE's breast-cancer split on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.privacy.tls import TlsFiles, make_throwaway_pki
from modelplane.privacy.vertical.data import write_breast_cancer_split


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_throwaway_pki(tmp_path_factory.mktemp("pki"), ["host", "guest", "arbiter"])


@pytest.fixture(scope="module")
def party_csvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_breast_cancer_split(tmp_path_factory.mktemp("data"))
