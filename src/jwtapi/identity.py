"""Who a login is for: :class:`Identity`, what an app's own user store tells jwtapi.

An app's ``@auth.verify_password`` returns one for the right password, and its
``@auth.load_identity`` for a subject at each refresh; the jwtapi service builds them from
its own user table (:mod:`jwtapi.users`). Free of Flask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jwtapi.stores.base import StoreError, normalize_scope

#: Claims jwtapi sets itself (RFC 7519, RFC 9068, RFC 9449, RFC 9470; ``fresh``, the mark
#: of a token issued by a login; ``scope_ceiling``, a narrowed login's limit, in refresh
#: tokens): an identity's own claims may not take these names.
REGISTERED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "sid", "typ", "auth_time", "cnf"}
    | {"fresh", "scope_ceiling"}
)


@dataclass(frozen=True, slots=True)
class Identity:
    """The subject of a login, its scope, and the claims its access tokens carry.

    :param subject: the ``sub`` of its tokens, usually the username.
    :param scope: space-separated scope tokens (RFC 6749 section 3.3), or a sequence.
    :param claims: extra claims for every access token, read back as
        ``current_token.claims[name]``; JSON values. A registered claim name raises
        :class:`ValueError`.
    """

    subject: str
    scope: str = ""
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError("Identity.subject must be a non-empty string")
        try:
            object.__setattr__(self, "scope", normalize_scope(self.scope or ""))
        except StoreError as exc:
            raise ValueError(f"Identity.scope: {exc}") from None
        object.__setattr__(self, "claims", MappingProxyType(validate_claims(self.claims)))


def validate_claims(claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``claims``; :class:`ValueError` for a registered name or a value that is
    not JSON."""
    if claims is None:
        return {}
    if not isinstance(claims, Mapping):
        raise ValueError("claims must be a mapping of claim names to JSON values")
    copied = dict(claims)
    for name in copied:
        if not isinstance(name, str) or not name:
            raise ValueError("claim names must be non-empty strings")
    taken = sorted(REGISTERED_CLAIMS & copied.keys())
    if taken:
        raise ValueError(f"registered claim names are set by jwtapi, not by claims: {taken}")
    try:
        json.dumps(copied, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"claims must be JSON values: {exc}") from None
    return copied
