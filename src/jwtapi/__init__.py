"""jwtapi: a JSON REST authentication API, and the Flask library behind it.

As a library::

    from jwtapi import Identity, JWTAuth, current_token, current_user, token_required

As a service: ``jwtapi serve`` (see :mod:`jwtapi.cli`), or :func:`create_app`. As a
client: :mod:`jwtapi.client` (``pip install 'jwtapi[client]'``).

The names below are imported when first used, so that ``import jwtapi.client`` (and the
pytest plugin, :mod:`jwtapi.testing`) loads nothing of Flask's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jwtapi.app import create_app
    from jwtapi.exceptions import AuthError, ConfigError
    from jwtapi.extension import (
        JWTAuth,
        create_access_token,
        current_token,
        current_user,
        decode_token,
        get_current_token,
        get_current_user,
        token_required,
        verify_request,
    )
    from jwtapi.identity import Identity
    from jwtapi.settings import Settings, load_settings
    from jwtapi.tokens import Token, TokenPair

#: Each public name, and the module that defines it.
_EXPORTS = {
    "AuthError": "jwtapi.exceptions",
    "ConfigError": "jwtapi.exceptions",
    "Identity": "jwtapi.identity",
    "JWTAuth": "jwtapi.extension",
    "Settings": "jwtapi.settings",
    "Token": "jwtapi.tokens",
    "TokenPair": "jwtapi.tokens",
    "create_access_token": "jwtapi.extension",
    "create_app": "jwtapi.app",
    "current_token": "jwtapi.extension",
    "current_user": "jwtapi.extension",
    "decode_token": "jwtapi.extension",
    "get_current_token": "jwtapi.extension",
    "get_current_user": "jwtapi.extension",
    "load_settings": "jwtapi.settings",
    "token_required": "jwtapi.extension",
    "verify_request": "jwtapi.extension",
}

__all__ = [
    "AuthError",
    "ConfigError",
    "Identity",
    "JWTAuth",
    "Settings",
    "Token",
    "TokenPair",
    "create_access_token",
    "create_app",
    "current_token",
    "current_user",
    "decode_token",
    "get_current_token",
    "get_current_user",
    "load_settings",
    "token_required",
    "verify_request",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jwtapi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
