"""jwtapi: a JSON REST authentication API, and the Flask library behind it.

As a library::

    from jwtapi import JWTAuth, token_required, current_token

As a service: ``jwtapi serve`` (see :mod:`jwtapi.cli`), or :func:`create_app`.
"""

from __future__ import annotations

from jwtapi.app import create_app
from jwtapi.exceptions import AuthError, ConfigError
from jwtapi.extension import JWTAuth, current_token, get_current_token, token_required
from jwtapi.settings import Settings, load_settings
from jwtapi.tokens import Token, TokenPair

__all__ = [
    "AuthError",
    "ConfigError",
    "JWTAuth",
    "Settings",
    "Token",
    "TokenPair",
    "create_app",
    "current_token",
    "get_current_token",
    "load_settings",
    "token_required",
]
