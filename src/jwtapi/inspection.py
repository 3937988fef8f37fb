"""``jwtapi token inspect``: a token's header and claims, and whether this configuration
accepts it now, for the person puzzled by a 401.

The verdict is the one a protected route gives: the same verification, the same revocation
check, the same descriptions. Flask-free, like the token logic it uses.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from jwtapi.exceptions import AuthError, StateUnavailable
from jwtapi.keys import load_keys
from jwtapi.sessions import ensure_not_revoked
from jwtapi.settings import Settings
from jwtapi.stores import StoreUnavailable, open_revocations
from jwtapi.tokens import ACCESS_TYPE, TokenService

#: The verdict of a token that a protected route would accept.
VALID = "valid"


@dataclass(frozen=True, slots=True)
class Inspection:
    """What ``jwtapi token inspect`` prints: the decoded parts (None when a part cannot be
    decoded), and ``verdict``, :data:`VALID` or the reason a protected route refuses it."""

    header: dict[str, Any] | None
    claims: dict[str, Any] | None
    verdict: str

    @property
    def valid(self) -> bool:
        """Whether a protected route of this configuration accepts the token now."""
        return self.verdict == VALID


def inspect_token(raw: str, settings: Settings) -> Inspection:
    """Decode ``raw`` for reading (no trust in what it says) and verify it as an access
    token under ``settings``: signature, algorithm, times, issuer, audience, type, and
    revocation in the configured store."""
    header, claims = _segment(raw, 0), _segment(raw, 1)
    try:
        tokens = TokenService(settings, load_keys(settings), cache_size=0)
        token = tokens.verify(raw, ACCESS_TYPE)
        try:
            ensure_not_revoked(open_revocations(settings.database, settings.redis_url), token)
        except StoreUnavailable:
            raise StateUnavailable() from None
    except AuthError as refusal:
        return Inspection(header, claims, refusal.description)
    return Inspection(header, claims, VALID)


def _segment(raw: str, index: int) -> dict[str, Any] | None:
    """The JSON object in the ``index``-th dot-separated part of ``raw``, if it is one."""
    parts = raw.split(".")
    if len(parts) != 3:
        return None
    try:
        text = base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4))
        value = json.loads(text)
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None
