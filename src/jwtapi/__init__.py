"""jwtapi: a JSON REST authentication API, and the Flask library behind it.

As a library::

    from jwtapi import Identity, JWTAuth, current_token, current_user, token_required

As a service: ``jwtapi serve`` (see :mod:`jwtapi.cli`), or :func:`create_app`.
"""

from __future__ import annotations

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
