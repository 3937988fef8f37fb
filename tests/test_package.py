"""The package's public names: importable from ``jwtapi``, and loaded only when used, so
that the client and the pytest plugin load nothing of Flask's."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import jwtapi


def test_every_public_name_is_importable_from_the_package() -> None:
    assert sorted(jwtapi.__all__) == sorted(jwtapi._EXPORTS)
    for name in jwtapi.__all__:
        defined_in = importlib.import_module(jwtapi._EXPORTS[name])
        assert getattr(jwtapi, name) is getattr(defined_in, name)
    assert set(jwtapi.__all__) <= set(dir(jwtapi))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'jwtapi' has no attribute 'nothing'"):
        jwtapi.nothing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_package_loads_no_flask() -> None:
    code = (
        "import sys, jwtapi, jwtapi.exceptions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
    # Then the first use of a library name brings Flask in.
    code = "import sys; from jwtapi import token_required; print('flask' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "True"
