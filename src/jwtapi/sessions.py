"""The token lifecycle, free of Flask: login, refresh with rotation, logout, revocation.

Every token of one login shares a family id (``sid``). A family records the refresh token
that is current; :meth:`Sessions.refresh` retires it for a new one atomically, and treats a
retired one presented again as reuse: the whole family is revoked, the newest access token
included (RFC 9700 section 4.14.2). Revoking a family writes ``sid:<sid>`` to the
revocation store first, so its access tokens are refused from that moment, then marks the
family so its refresh tokens never rotate again.

Who may log in is not this module's business: an :class:`IdentitySource` says it, the
app's own callbacks (``@auth.verify_password``, ``@auth.load_identity``) or the service's
user table (:mod:`jwtapi.users`). Both go through this one code path.

Each outcome is an event (:mod:`jwtapi.events`): a login that succeeded or failed, a
rotation, a reuse, a logout, logins revoked. The metrics and the audit trail listen; with
no listener an event costs a dictionary lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from jwtapi import events as ev
from jwtapi.dpop import DPoP, ProofRequest
from jwtapi.events import Events
from jwtapi.exceptions import (
    AuthError,
    InvalidCredentials,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    MalformedToken,
    RevokedToken,
    TemporarilyUnavailable,
)
from jwtapi.identity import Identity, validate_claims
from jwtapi.stores import FamilyStore, RevocationStore, Rotation, StoreUnavailable
from jwtapi.timing import UniformTiming
from jwtapi.tokens import (
    ACCESS_TYPE,
    REFRESH_TYPE,
    SCOPE_CEILING,
    Token,
    TokenPair,
    TokenService,
    new_id,
)


class IdentitySource(Protocol):
    """Who may log in: an app's own user store, or the service's user table."""

    def verify_password(self, username: str, password: str) -> Identity | None:
        """The identity of ``username`` when ``password`` is right, else None."""

    def load_identity(self, subject: str, login: Token) -> Identity | None:
        """The identity of ``subject`` now, at a refresh of the ``login`` (its refresh
        token); None ends that login."""

    def is_known(self, username: str) -> bool:
        """Whether ``username`` is a user's name: only then does a refused login's
        name reach the audit trail."""


#: What an identity may carry for its login to be recorded only while it still holds:
#: the service's user table sets the password hash it checked (see :mod:`jwtapi.users`).
def _guard(identity: Identity) -> str | None:
    value = getattr(identity, "password_hash", None)
    return value if isinstance(value, str) else None


class Revoker:
    """Revokes families and users' tokens; needs no keys, so the CLI uses it too.

    ``leeway`` is the verification leeway: a token is accepted until ``exp + leeway``, so
    its revocation must be kept at least that long.
    """

    def __init__(
        self,
        families: FamilyStore,
        revocations: RevocationStore,
        leeway: int = 0,
        events: Events | None = None,
    ) -> None:
        self.families = families
        self.revocations = revocations
        self.leeway = leeway
        self.events = events if events is not None else Events()

    def revoke_families(
        self,
        sids: Iterable[str],
        not_before: int = 0,
        also: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Revoke every token of the families ``sids`` (and the ``also`` ``(key, exp)``);
        return how many of those logins were not revoked before.

        The families are marked first, which stops their refresh tokens and fixes their
        newest access token's ``exp``; each revocation is then kept until that ``exp``
        (at least ``not_before``) plus the leeway.
        """
        sids = sorted(set(sids))
        finals, ended = self.families.mark_revoked_counting(sids) if sids else ({}, 0)
        if ended:
            self.events.emit(ev.FAMILIES_REVOKED, count=ended)
        now = int(time.time())
        entries = [(key, max(exp, now) + self.leeway) for key, exp in also]
        for sid in sids:
            expires = max(finals.get(sid, 0), not_before, now)
            entries.append((f"sid:{sid}", expires + self.leeway))
        if entries:
            self.revocations.revoke(entries)
        return ended

    def revoke_user(self, subject: str, *, audited: bool = True) -> int:
        """Revoke every token issued to ``subject`` so far; return how many logins.

        Families already revoked are revoked again (idempotent): running it a second time
        completes what an outage of the revocation store interrupted. ``audited=False``
        leaves it out of the audit trail (``subject`` is then no known user's name).
        """
        alive_at = int(time.time()) - self.leeway
        sids = [family.sid for family in self.families.of_subject(subject, alive_at)]
        self.revoke_families(sids)
        if audited:
            self.events.emit(ev.USER_TOKENS_REVOKED, subject=subject, logins=len(sids))
        return len(sids)

    def check(self, token: Token) -> None:
        """Raise :class:`RevokedToken` when ``token`` or its family was revoked."""
        ensure_not_revoked(self.revocations, token)


def _bound(jkt: str | None) -> dict[str, str]:
    """The ``jkt`` field of a bound login's events (none for a bearer login's)."""
    return {"jkt": jkt} if jkt is not None else {}


def narrowed(granted: str, asked: str) -> str:
    """``asked``, a subset of ``granted`` (space-separated scopes), in ``granted``'s
    order; :class:`InvalidScope` when it asks for more."""
    wanted = set(asked.split())
    if not wanted <= set(granted.split()):
        raise InvalidScope()
    return " ".join(s for s in granted.split() if s in wanted)


def ensure_not_revoked(revocations: RevocationStore, token: Token) -> None:
    """Raise :class:`RevokedToken` when ``token`` or its family is in ``revocations``."""
    if revocations.is_revoked(token.revocation_keys):
        raise RevokedToken()


class Sessions:
    """Login, refresh and logout over the stores, the token service and an identity source."""

    def __init__(
        self,
        tokens: TokenService,
        revoker: Revoker,
        identities: IdentitySource,
        timing: UniformTiming | None = None,
        dpop: DPoP | None = None,
    ) -> None:
        self.tokens = tokens
        #: DPoP (RFC 9449): the proofs of logins and refreshes; None: no binding at all.
        self.dpop = dpop
        self.revoker = revoker
        self.families = revoker.families
        self.identities = identities
        self.timing = timing or UniformTiming()
        #: Where this core's events go (the revoker's: one stream for both).
        self.events = revoker.events

    def known_name(self, username: str | None) -> str:
        """``username`` when it is a known user's name, else
        :data:`~jwtapi.events.UNKNOWN_USER`: what a refused attempt records (text typed as
        a username may be a password)."""
        if not username:
            return ev.UNKNOWN_USER
        try:
            known = self.identities.is_known(username)
        except Exception:  # an app's lookup that fails names no one
            known = False
        return username if known else ev.UNKNOWN_USER

    def login(
        self,
        username: str,
        password: str,
        scope: str | None = None,
        *,
        proof: ProofRequest | None = None,
    ) -> TokenPair:
        """Check the password (a refusal takes as long as a success) and start a family.

        ``scope`` (the token endpoint's) narrows the login to that subset of the user's
        scope; more raises :class:`InvalidScope`. ``proof`` is the request's DPoP proof:
        a valid one binds the login to its key, a bad one (or none, where DPoP is
        required) raises :class:`~jwtapi.exceptions.InvalidDPoPProof` before the password
        is checked.
        """
        events = self.events
        refused_as: list[str] = []

        def check() -> Identity | None:
            identity = self.identities.verify_password(username, password)
            if identity is None and events.wants(ev.LOGIN_FAILED):
                # Inside the timed check: the lookup is held to the floor with the rest.
                refused_as.append(self.known_name(username))
            return identity

        try:
            try:
                jkt = self._binding(proof, None)
            except InvalidDPoPProof as error:
                events.emit(ev.LOGIN_FAILED, username=ev.UNKNOWN_USER, reason=error.error)
                raise
            identity = self.timing.run(check)
            if identity is None:
                name = refused_as[0] if refused_as else ev.UNKNOWN_USER
                events.emit(ev.LOGIN_FAILED, username=name, reason=ev.INVALID_CREDENTIALS)
                raise InvalidCredentials()
            if scope is not None:
                try:
                    identity = replace(identity, scope=narrowed(identity.scope, scope))
                except InvalidScope as error:
                    events.emit(ev.LOGIN_FAILED, username=username, reason=error.error)
                    raise
            try:
                pair = self.start(identity, fresh=True, narrowed=scope is not None, jkt=jkt)
            except InvalidCredentials:  # the password changed (or the user went) meanwhile
                name = self.known_name(username)
                events.emit(ev.LOGIN_FAILED, username=name, reason=ev.INVALID_CREDENTIALS)
                raise
        except StoreUnavailable as exc:
            events.emit(ev.LOGIN_UNAVAILABLE, store=exc.store)
            raise
        events.emit(ev.LOGIN_SUCCEEDED, subject=identity.subject, sid=pair.family, **_bound(jkt))
        return pair

    def _binding(self, proof: ProofRequest | None, bound_to: str | None) -> str | None:
        """The DPoP key the new tokens are bound to: the login's own (``bound_to``), proved
        again by ``proof``; or the key of ``proof``, when it has one and DPoP is on."""
        if self.dpop is None:
            return bound_to
        request = proof if proof is not None else ProofRequest((), "", "")
        return self.dpop.refresh_binding(request, bound_to)

    def login_unreadable(self) -> None:
        """Record a login refused before any password was checked: its credentials could
        not be read (no HTTP Basic header, or one that does not decode)."""
        self.events.emit(ev.LOGIN_FAILED, username=ev.UNKNOWN_USER, reason=ev.INVALID_CREDENTIALS)

    def login_rate_limited(self, username: str | None, endpoint: str, limit: str) -> None:
        """Record a login refused by the rate limit ``limit`` (its scope) at ``endpoint``,
        for ``username`` (recorded only when it is a known user's name)."""
        events = self.events
        if events.wants(ev.LOGIN_RATE_LIMITED):
            events.emit(
                ev.LOGIN_RATE_LIMITED,
                username=self.known_name(username),
                endpoint=endpoint,
                reason=limit,
            )

    def login_unavailable(self, store: str) -> None:
        """Record a login refused with 503 before it reached :meth:`login` (its rate-limit
        counters did not answer)."""
        self.events.emit(ev.LOGIN_UNAVAILABLE, store=store)

    def start(
        self,
        identity: Identity,
        fresh: bool = False,
        narrowed: bool = False,
        jkt: str | None = None,
    ) -> TokenPair:
        """A new login (a token family, recorded) for ``identity``, whose password was
        checked (``fresh``), or which the app vouches for itself (``issue_tokens``); a
        ``narrowed`` one keeps its scope as the most its refreshes may grant; one with a
        ``jkt`` is bound to that DPoP key."""
        pair = self.tokens.issue_pair(
            identity.subject,
            identity.scope,
            claims=identity.claims,
            fresh=fresh,
            scope_ceiling=identity.scope if narrowed else None,
            jkt=jkt,
        )
        # Recorded only if the password is still the one just checked (the service's user
        # table): a login racing `jwtapi users passwd` or `remove` gets no token that
        # outlives the change.
        if not self.families.start(
            pair.family, identity.subject, _guard(identity), pair.refresh_jti,
            pair.access_exp, pair.refresh_exp,
        ):  # fmt: skip
            raise InvalidCredentials()
        return pair

    def refresh(
        self,
        raw_token: str,
        scope: str | None = None,
        *,
        check: Callable[[Token], None] | None = None,
        proof: ProofRequest | None = None,
    ) -> TokenPair:
        """Rotate a refresh token; on reuse revoke its whole family and refuse.

        ``proof`` is the request's DPoP proof: a login bound to a key needs one by that
        key (else :class:`~jwtapi.exceptions.InvalidDPoPProof`, and nothing rotates); an
        unbound login is bound by a valid one.

        The identity is asked again (``load_identity``): None ends the login. Without
        one, the login's scope and claims are carried over as they were. The scope never
        grows past what the login was granted (RFC 6749 section 6); ``scope`` narrows it
        further, and more raises :class:`InvalidScope`. ``check(token)`` runs on the
        verified token before anything else (the refresh cookie's CSRF check).
        """
        reused: list[Token] = []
        try:
            pair, token = self._rotate(raw_token, scope, check, reused, proof)
        except (AuthError, StoreUnavailable) as error:
            if reused:  # detected, even when an outage then cut the revocation short
                self.events.emit(
                    ev.REFRESH_REUSE_DETECTED, subject=reused[0].sub, sid=reused[0].sid
                )
            elif isinstance(error, AuthError) and not isinstance(error, TemporarilyUnavailable):
                self.events.emit(ev.REFRESH_FAILED, reason=error.error)
            raise
        self.events.emit(ev.TOKEN_REFRESHED, subject=token.sub, sid=token.sid, **_bound(pair.jkt))
        return pair

    def refresh_missing(self, error: AuthError) -> None:
        """Record a refresh refused for carrying no refresh token at all (``error``)."""
        self.events.emit(ev.REFRESH_FAILED, reason=error.error)

    def _rotate(
        self,
        raw_token: str,
        scope: str | None,
        check: Callable[[Token], None] | None,
        reused: list[Token],
        proof: ProofRequest | None = None,
    ) -> tuple[TokenPair, Token]:
        """:meth:`refresh`'s work; a reuse puts the token presented into ``reused``."""
        token = self.tokens.verify(raw_token, REFRESH_TYPE)
        if check is not None:
            check(token)
        if token.sid is None:
            raise MalformedToken("malformed token: no sid claim")
        self.revoker.check(token)
        # Before anything rotates: a stolen bound refresh token, without its key, leaves
        # the login as it was.
        jkt = self._binding(proof, token.jkt)
        identity = self.identities.load_identity(token.sub, token)
        if identity is None:
            self.revoker.revoke_families([token.sid])
            raise RevokedToken("token revoked: the user is no longer known")
        # A login narrowed at the token endpoint never grows past what it was granted
        # (RFC 6749 section 6); any other takes the user's scope as it stands now.
        ceiling = token.claims.get(SCOPE_CEILING)
        if isinstance(ceiling, str):
            granted = set(ceiling.split())
            kept = " ".join(s for s in identity.scope.split() if s in granted)
            identity = replace(identity, scope=kept)
        # A scope asked for narrows this access token only: the new refresh token keeps
        # the grant of the one presented (RFC 6749 section 6).
        access_scope = narrowed(identity.scope, scope) if scope is not None else identity.scope
        pair = self.tokens.issue_pair(
            identity.subject,
            access_scope,
            family=token.sid,
            claims=identity.claims,
            auth_time=token.auth_time if token.auth_time is not None else token.iat,
            scope_ceiling=ceiling if isinstance(ceiling, str) else None,
            refresh_scope=identity.scope,
            jkt=jkt,
        )
        outcome = self.families.rotate(
            token.sid, token.jti, pair.refresh_jti, pair.access_exp, pair.refresh_exp
        )
        if outcome is Rotation.REUSED:
            reused.append(token)
            self.revoker.revoke_families([token.sid])
            raise RevokedToken("token revoked: refresh token reused, its login is revoked")
        if outcome is Rotation.GONE:
            # Idempotent, and it completes a revocation that an outage cut short (the
            # family marked, the store of revocations unreachable before it was told).
            self.revoker.revoke_families([token.sid])
            raise RevokedToken()
        return pair, token

    def issue(self, identity: Identity) -> TokenPair:
        """:meth:`start` a login the app vouches for itself, with no password
        (``JWTAuth.issue_tokens``), recorded as ``token_issued``."""
        pair = self.start(identity)
        self.events.emit(
            ev.TOKEN_ISSUED,
            subject=identity.subject,
            sid=pair.family,
            scope=identity.scope,
            ttl=self.tokens.access_ttl,
        )
        return pair

    def issue_access_token(
        self,
        subject: str,
        *,
        scope: str = "",
        claims: Mapping[str, Any] | None = None,
        fresh: bool = False,
        expires_in: int | None = None,
    ) -> str:
        """An access token outside any login, for tests and service-to-service calls.

        It gets a family of its own, recorded, so :meth:`Revoker.revoke_user` and a
        logout revoke it like any other.
        """
        identity = Identity(subject, scope, validate_claims(claims))
        ttl = self.tokens.access_ttl if expires_in is None else int(expires_in)
        if ttl <= 0:
            raise ValueError("expires_in must be a positive number of seconds")
        now = int(time.time())
        family = new_id()
        extra: dict[str, Any] = {**identity.claims, "scope": identity.scope, "auth_time": now}
        if fresh:
            extra["fresh"] = True
        token = self.tokens.issue(ACCESS_TYPE, subject, family, now, extra, ttl=ttl)
        self.families.start(family, subject, None, new_id(), now + ttl, now + ttl)
        self.events.emit(
            ev.TOKEN_ISSUED, subject=subject, sid=family, scope=identity.scope, ttl=ttl
        )
        return token

    def end_login(self, token: Token, *, logout: bool = False) -> None:
        """Revoke every token of ``token``'s login (its family), and ``token`` itself:
        recorded as ``token_revoked`` (``/revoke``), or as ``logout`` when ``logout``."""
        self.revoker.revoke_families(
            [token.sid] if token.sid else [], also=[(f"jti:{token.jti}", token.exp)]
        )
        self.events.emit(
            ev.LOGOUT if logout else ev.TOKEN_REVOKED, subject=token.sub, sid=token.sid
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
        for sid in sorted(sids):
            self.events.emit(ev.LOGOUT, subject=access.sub, sid=sid)
