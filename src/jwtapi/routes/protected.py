"""The protected example routes: any access token, and one that needs scope ``admin``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from jwtapi.extension import current_token, token_required

bp = Blueprint("protected", __name__)


@bp.get("/protected")
@token_required
def protected() -> dict[str, Any]:
    """Who the token says the caller is."""
    return {
        "sub": current_token.sub,
        "scope": current_token.scope,
        "message": f"Hello, {current_token.sub}: your access token is valid.",
    }


@bp.get("/protected/admin")
@token_required(scope="admin")
def admin() -> dict[str, Any]:
    """Only for tokens with scope ``admin``."""
    return {
        "sub": current_token.sub,
        "scope": current_token.scope,
        "message": f"Hello, {current_token.sub}: you have the admin scope.",
    }
