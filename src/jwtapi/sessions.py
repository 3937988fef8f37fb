"""The token lifecycle, free of Flask: login, refresh with rotation, logout, revocation.

Every token of one login shares a family id (``sid``). A family records the refresh token
that is current; :meth:`Sessions.refresh` retires it for a new one atomically, and treats a
retired one presented again as reuse: the whole family is revoked, the newest access token
included (RFC 9700 section 4.14.2). Revoking a family writes ``sid:<sid>`` to the
revocation store first, so its access tokens are refused from that moment, then marks the
family so its refresh tokens never rotate again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from jwtapi.exceptions import (
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    MalformedToken,
    RevokedToken,
)
from jwtapi.passwords import Passwords
from jwtapi.stores import FamilyStore, RevocationStore, Rotation, UserStore
from jwtapi.tokens import REFRESH_TYPE, Token, TokenPair, TokenService


class Revoker:
    """Revokes families and users' tokens; needs no keys, so the CLI uses it too.

    ``leeway`` is the verification leeway: a token is accepted until ``exp + leeway``, so
    its revocation must be kept at least that long.
    """

    def __init__(
        self, families: FamilyStore, revocations: RevocationStore, leeway: int = 0
    ) -> None:
        self.families = families
        self.revocations = revocations
        self.leeway = leeway

    def revoke_families(
        self,
        sids: Iterable[str],
        not_before: int = 0,
        also: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Revoke every token of the families ``sids`` (and the ``also`` ``(key, exp)``).

        The families are marked first, which stops their refresh tokens and fixes their
        newest access token's ``exp``; each revocation is then kept until that ``exp``
        (at least ``not_before``) plus the leeway.
        """
        sids = sorted(set(sids))
        finals = self.families.mark_revoked(sids) if sids else {}
        now = int(time.time())
        entries = [(key, max(exp, now) + self.leeway) for key, exp in also]
        for sid in sids:
            expires = max(finals.get(sid, 0), not_before, now)
            entries.append((f"sid:{sid}", expires + self.leeway))
        if entries:
            self.revocations.revoke(entries)

    def revoke_user(self, subject: str) -> int:
        """Revoke every token issued to ``subject`` so far; return how many logins.

        Families already revoked are revoked again (idempotent): running it a second time
        completes what an outage of the revocation store interrupted.
        """
        alive_at = int(time.time()) - self.leeway
        sids = [family.sid for family in self.families.of_subject(subject, alive_at)]
        self.revoke_families(sids)
        return len(sids)

    def check(self, token: Token) -> None:
        """Raise :class:`RevokedToken` when ``token`` or its family was revoked."""
        ensure_not_revoked(self.revocations, token)


def ensure_not_revoked(revocations: RevocationStore, token: Token) -> None:
    """Raise :class:`RevokedToken` when ``token`` or its family is in ``revocations``."""
    if revocations.is_revoked(token.revocation_keys):
        raise RevokedToken()


class Sessions:
    """Login, refresh and logout over the stores and the token service."""

    def __init__(
        self,
        tokens: TokenService,
        users: UserStore,
        revoker: Revoker,
        passwords: Passwords,
    ) -> None:
        self.tokens = tokens
        self.users = users
        self.revoker = revoker
        self.families = revoker.families
        self.passwords = passwords

    def login(self, username: str, password: str) -> TokenPair:
        """Check the password (same cost for unknown users) and start a new family."""
        user = self.users.get(username)
        if not self.passwords.verify(user.password_hash if user else None, password):
            raise InvalidCredentials()
        assert user is not None  # verify(None, ...) is always False
        password_hash = user.password_hash
        if self.passwords.needs_rehash(password_hash):
            upgraded = self.passwords.hash(password)
            if self.users.upgrade_hash(user.name, password_hash, upgraded):
                password_hash = upgraded
        pair = self.tokens.issue_pair(user.name, user.scope)
        # Recorded only if the password is still the one just checked: a login racing
        # `jwtapi users passwd` or `remove` gets no token that outlives the change.
        if not self.families.start(
            pair.family, user.name, password_hash, pair.refresh_jti, pair.access_exp,
            pair.refresh_exp,
        ):  # fmt: skip
            raise InvalidCredentials()
        return pair

    def refresh(self, raw_token: str) -> TokenPair:
        """Rotate a refresh token; on reuse revoke its whole family and refuse."""
        token = self.tokens.verify(raw_token, REFRESH_TYPE)
        if token.sid is None:
            raise MalformedToken("malformed token: no sid claim")
        self.revoker.check(token)
        user = self.users.get(token.sub)
        if user is None:
            raise RevokedToken()
        pair = self.tokens.issue_pair(user.name, user.scope, family=token.sid)
        outcome = self.families.rotate(
            token.sid, token.jti, pair.refresh_jti, pair.access_exp, pair.refresh_exp
        )
        if outcome is Rotation.REUSED:
            self.revoker.revoke_families([token.sid])
            raise RevokedToken("token revoked: refresh token reused, its login is revoked")
        if outcome is Rotation.GONE:
            # Idempotent, and it completes a revocation that an outage cut short (the
            # family marked, the store of revocations unreachable before it was told).
            self.revoker.revoke_families([token.sid])
            raise RevokedToken()
        return pair

    def end_login(self, token: Token) -> None:
        """Revoke every token of ``token``'s login (its family), and ``token`` itself."""
        self.revoker.revoke_families(
            [token.sid] if token.sid else [], also=[(f"jti:{token.jti}", token.exp)]
        )

    def logout(self, access: Token, raw_refresh: str | None = None) -> None:
        """Revoke the access token's family and, when given, the refresh token's."""
        sids = {access.sid} if access.sid else set()
        if raw_refresh is not None:
            try:
                refresh = self.tokens.verify(raw_refresh, REFRESH_TYPE)
            except InvalidToken as error:
                raise InvalidRequest(
                    f"refresh_token is not a valid refresh token: {error.description}"
                ) from None
            if refresh.sub != access.sub:
                raise InvalidRequest("refresh_token belongs to another user")
            if refresh.sid:
                sids.add(refresh.sid)
        self.revoker.revoke_families(
            sids, not_before=access.exp, also=[(f"jti:{access.jti}", access.exp)]
        )
