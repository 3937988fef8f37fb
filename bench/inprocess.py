"""In-process cost per request through the WSGI app, no network: jwtapi against its yardsticks.

Every variant is one ``GET`` through a Flask app's WSGI callable with a prepared environ,
answering the same tiny JSON body. Variants are measured in interleaved rounds (a
shuffled order each round) so the noise of a shared machine falls on all of them alike;
the result is each variant's median cost per request, and its ratio to the open route.

Run: ``python -m bench.inprocess`` (``make bench`` runs every part).
"""

from __future__ import annotations

import dataclasses
import io
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from flask import Flask

from jwtapi import JWTAuth, current_user, token_required
from jwtapi.extension import EXTENSION_KEY
from jwtapi.keys import generate_private_key, load_keys, write_key_pair
from jwtapi.settings import parse_settings
from jwtapi.stores import open_revocations
from jwtapi.tokens import TokenService

Request = Callable[[], None]


@dataclass(frozen=True)
class Result:
    """One variant's median cost per request, in microseconds, over the rounds."""

    name: str
    median_us: float
    samples: int


def _environ(path: str, token: str | None) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def wsgi_request(
    app: Flask,
    path: str,
    token: str | None = None,
    each: Callable[[], dict[str, str]] | None = None,
) -> Request:
    """One request through ``app``'s WSGI callable; checked to answer 200 once, here.
    ``each`` gives environ entries of each request's own (a fresh DPoP proof)."""
    template = _environ(path, token)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        statuses.append(status)

    def request() -> None:
        environ = dict(template)
        if each is not None:
            environ.update(each())
        body = app.wsgi_app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    request()
    if statuses[-1] != "200 OK":
        raise RuntimeError(f"{path} answered {statuses[-1]}, not 200")
    return request


def open_route() -> Request:
    """A Flask route with no authentication at all: the baseline."""
    app = Flask("open")

    @app.get("/r")
    def r() -> dict[str, Any]:
        return {"sub": "bench"}

    return wsgi_request(app, "/r")


def jwtapi_route(
    workdir: Path,
    algorithm: str,
    redis_url: str | None = None,
    cache_size: int | None = None,
    revoked: int = 0,
    load_user: bool = False,
) -> Request:
    """A route behind ``@token_required``, with every claim check and the revocation check.

    ``cache_size=0`` switches the verified-token cache off; ``revoked`` puts that many
    revocations in the store first; ``load_user`` registers an ``@auth.load_user`` (a
    dictionary lookup, as an app's cache of users would be) and answers ``current_user``.
    """
    values: dict[str, Any] = {
        "JWTAPI_ALGORITHM": algorithm,
        "JWTAPI_DATABASE": str(workdir / f"{algorithm}.sqlite3"),
    }
    if algorithm.startswith("HS"):
        values["JWTAPI_SECRET_KEY"] = secrets.token_urlsafe(48)
    else:
        private, _ = write_key_pair(generate_private_key(algorithm), workdir / algorithm)
        values["JWTAPI_PRIVATE_KEY_FILE"] = str(private)
    if redis_url:
        values["JWTAPI_REDIS_URL"] = redis_url
    settings = parse_settings(values)
    revocations = open_revocations(settings.database, redis_url)
    if revoked:
        expires = int(time.time()) + 86_400
        batch = 50_000
        for start in range(0, revoked, batch):
            entries = [(f"jti:revoked-{n}", expires) for n in range(start, start + batch)]
            revocations.revoke(entries[: revoked - start])
    app = Flask(f"jwtapi-{algorithm}-{revoked}-{cache_size}-{load_user}")
    auth = JWTAuth(app, settings=settings, revocations=revocations)
    if load_user:
        users = {"bench": {"name": "bench"}}
        auth.load_user(lambda token: users.get(token.sub))
    if cache_size is not None:
        state = app.extensions[EXTENSION_KEY]
        tokens = TokenService(settings, state.keys, cache_size=cache_size)
        app.extensions[EXTENSION_KEY] = dataclasses.replace(state, tokens=tokens)

    @app.get("/r")
    @token_required
    def r() -> dict[str, Any]:
        return {"sub": current_user["name"] if load_user else "bench"}

    with app.app_context():
        token = JWTAuth.issue_tokens("bench", "read").access_token
    return wsgi_request(app, "/r", token)


def dpop_route(workdir: Path, proof_algorithm: str, proofs: int) -> Request:
    """The HS256 route of :func:`jwtapi_route`, its token bound to a DPoP key, each
    request with ``Authorization: DPoP`` and a fresh proof by that key (``proof_algorithm``,
    ES256 or EdDSA): two signatures checked, and the proof's ``jti`` recorded in the
    SQLite replay store. The ``proofs`` proofs are made beforehand: signing them is the
    client's cost, not the server's."""
    import base64
    import hashlib
    import uuid

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from jwtapi.extension import auth_state
    from jwtapi.identity import Identity
    from jwtapi.keys import jwk_thumbprint

    values = {
        "JWTAPI_SECRET_KEY": secrets.token_urlsafe(48),
        "JWTAPI_DATABASE": str(workdir / f"dpop-{proof_algorithm}.sqlite3"),
    }
    settings = parse_settings(values)
    app = Flask(f"jwtapi-dpop-{proof_algorithm}")
    JWTAuth(app, settings=settings)

    @app.get("/r")
    @token_required
    def r() -> dict[str, Any]:
        return {"sub": "bench"}

    key: Any
    if proof_algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    algorithm = jwt.get_algorithm_by_name(proof_algorithm)
    public = algorithm.to_jwk(key.public_key(), as_dict=True)
    with app.app_context():
        identity = Identity("bench", "read", {})
        pair = auth_state().require_sessions().start(identity, jkt=jwk_thumbprint(public))
    token = pair.access_token
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=")
    header = {"typ": "dpop+jwt", "jwk": public}
    now = int(time.time())
    pool = [
        jwt.encode(
            {
                "jti": uuid.uuid4().hex,
                "htm": "GET",
                "htu": "http://bench/r",
                "iat": now,
                "ath": ath.decode(),
            },
            key,
            proof_algorithm,
            headers=header,
        )
        for _ in range(proofs + 1)
    ]
    authorization = f"DPoP {token}"
    return wsgi_request(
        app, "/r", each=lambda: {"HTTP_AUTHORIZATION": authorization, "HTTP_DPOP": pool.pop()}
    )


def flask_jwt_extended_route() -> Request:
    """The same route behind Flask-JWT-Extended's ``@jwt_required()`` (HS256)."""
    from flask_jwt_extended import JWTManager, create_access_token, jwt_required

    app = Flask("flask-jwt-extended")
    app.config["JWT_SECRET_KEY"] = secrets.token_urlsafe(48)
    JWTManager(app)

    @app.get("/r")
    @jwt_required()
    def r() -> dict[str, Any]:
        return {"sub": "bench"}

    with app.app_context():
        token = create_access_token(identity="bench")
    return wsgi_request(app, "/r", token)


def raw_decode() -> Request:
    """PyJWT's ``jwt.decode`` of an HS256 token, alone: the floor under any decorator."""
    secret = secrets.token_urlsafe(48)
    token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, secret, "HS256")

    def request() -> None:
        jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})

    request()
    return request


def raw_decode_of_our_token(workdir: Path) -> Request:
    """``jwt.decode`` alone of a token exactly as jwtapi issues it (RFC 9068 claims, HS256),
    checking what jwtapi checks: the floor PyJWT sets for the cache-off variant."""
    settings = parse_settings(
        {
            "JWTAPI_SECRET_KEY": secrets.token_urlsafe(48),
            "JWTAPI_DATABASE": str(workdir / "floor.sqlite3"),
        }
    )
    service = TokenService(settings, load_keys(settings), cache_size=0)
    token = service.issue_pair("bench", "read").access_token
    secret = settings.secret_key
    assert secret is not None
    required = ["exp", "iat", "nbf", "sub", "jti", "iss"]

    def request() -> None:
        jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=settings.issuer,
            options={"require": required},
        )

    request()
    return request


@contextmanager
def variants(
    redis_url: str | None = None,
    revoked_counts: tuple[int, ...] = (10_000, 1_000_000),
    requests: int = 15 * 300,
) -> Iterator[dict[str, Request]]:
    """Every in-process variant, built in a temporary directory removed afterwards;
    ``requests`` is how many each will be asked (the DPoP variants make that many proofs
    beforehand)."""
    workdir = Path(tempfile.mkdtemp(prefix="jwtapi-bench-"))
    try:
        built = {
            "open route": open_route(),
            "jwtapi HS256": jwtapi_route(workdir, "HS256"),
            "jwtapi RS256": jwtapi_route(workdir, "RS256"),
            "jwtapi ES256": jwtapi_route(workdir, "ES256"),
            "jwtapi EdDSA": jwtapi_route(workdir, "EdDSA"),
            "jwtapi DPoP, ES256 proof + HS256 token": dpop_route(workdir, "ES256", requests),
            "jwtapi DPoP, EdDSA proof + HS256 token": dpop_route(workdir, "EdDSA", requests),
            "jwtapi HS256, cache off": jwtapi_route(workdir / "nocache", "HS256", cache_size=0),
            "jwtapi HS256, load_user": jwtapi_route(workdir / "user", "HS256", load_user=True),
            "Flask-JWT-Extended HS256": flask_jwt_extended_route(),
            "jwt.decode alone": raw_decode(),
            "jwt.decode alone, jwtapi's token": raw_decode_of_our_token(workdir),
        }
        if redis_url:
            built["jwtapi HS256, Redis"] = jwtapi_route(workdir / "redis", "HS256", redis_url)
        for count in revoked_counts:
            built[f"jwtapi HS256, {count:,} revoked"] = jwtapi_route(
                workdir / f"revoked-{count}", "HS256", revoked=count
            )
        yield built
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(requests: dict[str, Request], rounds: int, per_round: int) -> list[Result]:
    """Median microseconds per request of each variant, over interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in requests}
    order = list(requests)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            request = requests[name]
            started = time.perf_counter()
            for _ in range(per_round):
                request()
            samples[name].append((time.perf_counter() - started) / per_round * 1e6)
    return [Result(name, statistics.median(s), len(s)) for name, s in samples.items()]


def main() -> None:
    """Measure and print the table."""
    with variants() as built:
        results = measure(built, rounds=15, per_round=300)
    base = next(r.median_us for r in results if r.name == "open route")
    for result in results:
        print(f"{result.name:28} {result.median_us:9.1f} us  {result.median_us / base:5.2f}x")


if __name__ == "__main__":
    main()
