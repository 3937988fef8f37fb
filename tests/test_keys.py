"""Key loading: PEM and OpenSSH formats, checks, RFC 7638 kids, JWKS, key generation.

Every key is generated here, in the test, with ``cryptography``; no key file is committed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import KIND_FOR
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from jwtapi.exceptions import ConfigError
from jwtapi.keys import (
    KeySet,
    generate_private_key,
    load_keys,
    thumbprint,
    write_key_pair,
)
from jwtapi.settings import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, Settings, parse_settings

SECRET = "a-test-secret-that-is-long-enough-for-hs512-0123456789abcdefghij"
PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
OPENSSH = serialization.PrivateFormat.OpenSSH
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

# RFC 7638 section 3.1: the example key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
    "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
    "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
    "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_E = "AQAB"
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# Independent helpers (not jwtapi's) ---------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def int_bytes(number: int, length: int | None = None) -> bytes:
    return number.to_bytes(length or (number.bit_length() + 7) // 8, "big")


def jwk_members(public: Any) -> dict[str, str]:
    """The RFC 7638 required members of ``public``, computed from its numbers."""
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"e": b64u(int_bytes(numbers.e)), "kty": "RSA", "n": b64u(int_bytes(numbers.n))}
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
        point = public.public_numbers()
        return {
            "crv": crv,
            "kty": "EC",
            "x": b64u(int_bytes(point.x, size)),
            "y": b64u(int_bytes(point.y, size)),
        }
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
    return {"crv": crv, "kty": "OKP", "x": b64u(raw)}


def expected_kid(public: Any) -> str:
    canonical = json.dumps(jwk_members(public), separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode("utf-8")).digest())


def spki(public: Any) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# Key fixtures and files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """One private key of each kind, generated once for the module."""
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa3": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p256b": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


def write_private(
    path: Path,
    key: Any,
    fmt: serialization.PrivateFormat = PKCS8,
    encryption: serialization.KeySerializationEncryption | None = None,
) -> Path:
    data = key.private_bytes(PEM, fmt, encryption or serialization.NoEncryption())
    path.write_bytes(data)
    return path


def write_public(path: Path, key: Any, openssh: bool = False, comment: bytes = b"") -> Path:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    if openssh:
        data = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        data += (b" " + comment if comment else b"") + b"\n"
    else:
        data = public.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(data)
    return path


def settings_for(
    algorithm: str,
    private: Path | None = None,
    public: Path | None = None,
    extra: Sequence[Path] = (),
) -> Settings:
    values: dict[str, str] = {"JWTAPI_ALGORITHM": algorithm}
    if private is not None:
        values["JWTAPI_PRIVATE_KEY_FILE"] = str(private)
    if public is not None:
        values["JWTAPI_PUBLIC_KEY_FILE"] = str(public)
    if extra:
        values["JWTAPI_EXTRA_PUBLIC_KEY_FILES"] = ",".join(str(p) for p in extra)
    return parse_settings(values)


def refused(settings: Settings, variable: str) -> str:
    """Assert load_keys raises one ConfigError line naming ``variable``."""
    with pytest.raises(ConfigError) as info:
        load_keys(settings)
    message = str(info.value)
    assert "\n" not in message, message
    assert f"JWTAPI_{variable}" in message, message
    return message


def assert_signs_with(keyset: KeySet, private: Any, algorithm: str) -> None:
    """``keyset`` signs with ``private``, verifies with its public key, kid = thumbprint."""
    public = private.public_key()
    kid = expected_kid(public)
    assert keyset.algorithm == algorithm
    assert keyset.can_sign
    assert keyset.signing_key is not None
    assert not isinstance(keyset.signing_key, bytes)
    assert spki(keyset.signing_key.public_key()) == spki(public)
    assert keyset.signing_kid == kid
    assert list(keyset.verification_keys) == [kid]
    assert spki(keyset.verification_keys[kid]) == spki(public)
    assert [jwk["kid"] for jwk in keyset.jwks["keys"]] == [kid]


# Private keys: PEM and OpenSSH --------------------------------------------------------

PEM_CASES = [
    ("RS256", "rsa", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    ("RS256", "rsa", TRADITIONAL, b"-----BEGIN RSA PRIVATE KEY-----"),
    ("RS512", "rsa", TRADITIONAL, b"-----BEGIN RSA PRIVATE KEY-----"),
    ("PS256", "rsa", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    ("ES256", "p256", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    ("ES256", "p256", TRADITIONAL, b"-----BEGIN EC PRIVATE KEY-----"),
    ("ES384", "p384", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    ("ES512", "p521", TRADITIONAL, b"-----BEGIN EC PRIVATE KEY-----"),
    ("EdDSA", "ed25519", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    ("EdDSA", "ed448", PKCS8, b"-----BEGIN PRIVATE KEY-----"),
]


@pytest.mark.parametrize(
    ("algorithm", "kind", "fmt", "banner"),
    PEM_CASES,
    ids=[f"{a}-{k}-{b[11:-5].decode().replace(' ', '-')}" for a, k, _, b in PEM_CASES],
)
def test_pem_private_key(
    keys: dict[str, Any],
    tmp_path: Path,
    algorithm: str,
    kind: str,
    fmt: serialization.PrivateFormat,
    banner: bytes,
) -> None:
    path = write_private(tmp_path / "private.pem", keys[kind], fmt)
    assert path.read_bytes().startswith(banner)
    assert_signs_with(load_keys(settings_for(algorithm, path)), keys[kind], algorithm)


def test_pkcs1_and_pkcs8_of_one_key_give_one_kid(keys: dict[str, Any], tmp_path: Path) -> None:
    pkcs8 = load_keys(settings_for("RS256", write_private(tmp_path / "a.pem", keys["rsa"])))
    pkcs1 = load_keys(
        settings_for("RS256", write_private(tmp_path / "b.pem", keys["rsa"], TRADITIONAL))
    )
    assert pkcs8.signing_kid == pkcs1.signing_kid


@pytest.mark.parametrize(
    ("algorithm", "kind"), [("RS256", "rsa"), ("EdDSA", "ed25519"), ("ES256", "p256")]
)
def test_openssh_private_key(
    keys: dict[str, Any], tmp_path: Path, algorithm: str, kind: str
) -> None:
    path = write_private(tmp_path / "id_key", keys[kind], OPENSSH)
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert_signs_with(load_keys(settings_for(algorithm, path)), keys[kind], algorithm)


@pytest.mark.parametrize(
    ("algorithm", "kind", "prefix"),
    [
        ("RS256", "rsa", b"ssh-rsa "),
        ("EdDSA", "ed25519", b"ssh-ed25519 "),
        ("ES256", "p256", b"ecdsa-sha2-nistp256 "),
    ],
)
def test_openssh_public_key_line(
    keys: dict[str, Any], tmp_path: Path, algorithm: str, kind: str, prefix: bytes
) -> None:
    private = write_private(tmp_path / "id_key", keys[kind], OPENSSH)
    public = write_public(tmp_path / "id_key.pub", keys[kind], openssh=True, comment=b"me@host")
    assert public.read_bytes().startswith(prefix)
    assert_signs_with(load_keys(settings_for(algorithm, private, public)), keys[kind], algorithm)

    verify_only = load_keys(settings_for(algorithm, public=public))
    kid = expected_kid(keys[kind].public_key())
    assert not verify_only.can_sign
    assert verify_only.signing_key is None
    assert verify_only.signing_kid is None
    assert list(verify_only.verification_keys) == [kid]
    assert spki(verify_only.verification_keys[kid]) == spki(keys[kind].public_key())


@pytest.mark.parametrize("algorithm", sorted(ASYMMETRIC_ALGORITHMS))
def test_public_key_derived_when_not_given(
    keys: dict[str, Any], tmp_path: Path, algorithm: str
) -> None:
    key = keys[KIND_FOR[algorithm]]
    keyset = load_keys(settings_for(algorithm, write_private(tmp_path / "k.pem", key)))
    assert_signs_with(keyset, key, algorithm)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_matching_pem_public_key_accepted(
    keys: dict[str, Any], tmp_path: Path, algorithm: str
) -> None:
    key = keys[KIND_FOR[algorithm]]
    private = write_private(tmp_path / "k.pem", key)
    public = write_public(tmp_path / "k.pub.pem", key)
    assert_signs_with(load_keys(settings_for(algorithm, private, public)), key, algorithm)


def test_verify_only_pem_public_key(keys: dict[str, Any], tmp_path: Path) -> None:
    public = write_public(tmp_path / "k.pub.pem", keys["rsa"])
    keyset = load_keys(settings_for("PS256", public=public))
    kid = expected_kid(keys["rsa"].public_key())
    assert not keyset.can_sign
    assert keyset.signing_kid is None
    assert list(keyset.verification_keys) == [kid]
    assert [jwk["kid"] for jwk in keyset.jwks["keys"]] == [kid]


# Refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "mine", "other", "openssh"),
    [
        ("RS256", "rsa", "rsa2", False),
        ("RS256", "rsa", "rsa2", True),
        ("ES256", "p256", "p256b", False),
    ],
)
def test_mismatched_pair_refused(
    keys: dict[str, Any], tmp_path: Path, algorithm: str, mine: str, other: str, openssh: bool
) -> None:
    private = write_private(tmp_path / "k.pem", keys[mine])
    public = write_public(tmp_path / "other.pub", keys[other], openssh=openssh)
    refused(settings_for(algorithm, private, public), "PUBLIC_KEY_FILE")


@pytest.mark.parametrize(
    "variable", ["PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE", "EXTRA_PUBLIC_KEY_FILES"]
)
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_unreadable_file_refused(
    keys: dict[str, Any], tmp_path: Path, variable: str, problem: str
) -> None:
    bad = tmp_path / "nothing-here.pem"
    if problem == "directory":
        bad.mkdir()
    good = write_private(tmp_path / "k.pem", keys["rsa"])
    settings = {
        "PRIVATE_KEY_FILE": settings_for("RS256", bad),
        "PUBLIC_KEY_FILE": settings_for("RS256", good, bad),
        "EXTRA_PUBLIC_KEY_FILES": settings_for("RS256", good, extra=[bad]),
    }[variable]
    message = refused(settings, variable)
    assert str(bad) in message


GARBAGE = {
    "empty": b"",
    "text": b"this is not a key\n",
    "binary": bytes(range(256)) * 4,
    "bad-pem-body": b"-----BEGIN PRIVATE KEY-----\nAAAAnotbase64!!\n-----END PRIVATE KEY-----\n",
    "bad-openssh-body": (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    "bad-ssh-pub": b"ssh-rsa AAAAB3NzaC1yc2EAAAAgarbage me@host\n",
}


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_private_key_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pem"
    path.write_bytes(content)
    refused(settings_for("RS256", path), "PRIVATE_KEY_FILE")


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_public_key_refused(keys: dict[str, Any], tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pub"
    path.write_bytes(content)
    refused(settings_for("RS256", public=path), "PUBLIC_KEY_FILE")
    private = write_private(tmp_path / "k.pem", keys["rsa"])
    refused(settings_for("RS256", private, extra=[path]), "EXTRA_PUBLIC_KEY_FILES")


def test_public_key_given_as_private_key_refused(keys: dict[str, Any], tmp_path: Path) -> None:
    path = write_public(tmp_path / "k.pub.pem", keys["rsa"])
    refused(settings_for("RS256", path), "PRIVATE_KEY_FILE")


def test_private_key_given_as_public_key_refused(keys: dict[str, Any], tmp_path: Path) -> None:
    path = write_private(tmp_path / "k.pem", keys["rsa"])
    refused(settings_for("RS256", public=path), "PUBLIC_KEY_FILE")


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [("rsa", PKCS8), ("rsa", TRADITIONAL), ("p256", TRADITIONAL), ("ed25519", PKCS8)],
    ids=["rsa-pkcs8", "rsa-pkcs1", "ec-sec1", "ed25519-pkcs8"],
)
def test_encrypted_pem_private_key_refused(
    keys: dict[str, Any], tmp_path: Path, kind: str, fmt: serialization.PrivateFormat
) -> None:
    algorithm = {"rsa": "RS256", "p256": "ES256", "ed25519": "EdDSA"}[kind]
    encryption = serialization.BestAvailableEncryption(b"correct horse battery")
    path = write_private(tmp_path / "encrypted.pem", keys[kind], fmt, encryption)
    assert b"ENCRYPTED" in path.read_bytes()
    message = refused(settings_for(algorithm, path), "PRIVATE_KEY_FILE")
    assert "encrypted" in message


def ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def encrypted_openssh_key(key: Any) -> bytes:
    """An OpenSSH private key file laid out as ``ssh-keygen -N passphrase`` writes it.

    (cryptography needs the optional bcrypt module to encrypt one; the loader refuses a
    passphrase-protected key before decrypting, so an opaque encrypted section will do.)
    """
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_blob = base64.b64decode(line.split()[1])
    body = (
        b"openssh-key-v1\0"
        + ssh_string(b"aes256-ctr")
        + ssh_string(b"bcrypt")
        + ssh_string(ssh_string(bytes(range(16))) + (16).to_bytes(4, "big"))
        + (1).to_bytes(4, "big")
        + ssh_string(public_blob)
        + ssh_string(bytes(range(160)))
    )
    encoded = base64.encodebytes(body).replace(b"\n", b"")
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    return (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + b"\n".join(lines)
        + b"\n-----END OPENSSH PRIVATE KEY-----\n"
    )


@pytest.mark.parametrize(("algorithm", "kind"), [("EdDSA", "ed25519"), ("RS256", "rsa")])
def test_encrypted_openssh_private_key_refused(
    keys: dict[str, Any], tmp_path: Path, algorithm: str, kind: str
) -> None:
    path = tmp_path / "id_encrypted"
    path.write_bytes(encrypted_openssh_key(keys[kind]))
    message = refused(settings_for(algorithm, path), "PRIVATE_KEY_FILE")
    assert "encrypted" in message


WRONG_TYPES = [
    ("RS256", "p256"),
    ("RS384", "ed25519"),
    ("PS256", "p384"),
    ("RS256", "rsa1024"),
    ("PS512", "rsa1024"),
    ("ES256", "p384"),
    ("ES256", "p521"),
    ("ES384", "p256"),
    ("ES512", "p384"),
    ("ES256", "rsa"),
    ("ES256", "ed25519"),
    ("EdDSA", "rsa"),
    ("EdDSA", "p256"),
]


@pytest.mark.parametrize(("algorithm", "kind"), WRONG_TYPES)
@pytest.mark.parametrize(
    "variable", ["PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE", "EXTRA_PUBLIC_KEY_FILES"]
)
def test_wrong_key_type_refused(
    keys: dict[str, Any], tmp_path: Path, algorithm: str, kind: str, variable: str
) -> None:
    wrong = keys[kind]
    if variable == "PRIVATE_KEY_FILE":
        settings = settings_for(algorithm, write_private(tmp_path / "k.pem", wrong))
    elif variable == "PUBLIC_KEY_FILE":
        settings = settings_for(algorithm, public=write_public(tmp_path / "k.pub", wrong))
    else:
        good = write_private(tmp_path / "good.pem", keys[KIND_FOR[algorithm]])
        settings = settings_for(algorithm, good, extra=[write_public(tmp_path / "x.pub", wrong)])
    message = refused(settings, variable)
    if kind == "rsa1024":
        assert "1024" in message


# kid: RFC 7638 thumbprints ------------------------------------------------------------


def rfc7638_key() -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(b64u_int(RFC7638_E), b64u_int(RFC7638_N)).public_key()


def test_thumbprint_matches_rfc7638_example() -> None:
    assert thumbprint(rfc7638_key()) == RFC7638_THUMBPRINT


def test_independent_helper_matches_rfc7638_example() -> None:
    assert expected_kid(rfc7638_key()) == RFC7638_THUMBPRINT


def test_kid_of_rfc7638_key_loaded_from_file(tmp_path: Path) -> None:
    public = write_public(tmp_path / "rfc.pub.pem", rfc7638_key())
    keyset = load_keys(settings_for("RS256", public=public))
    assert list(keyset.verification_keys) == [RFC7638_THUMBPRINT]
    assert keyset.jwks["keys"][0]["kid"] == RFC7638_THUMBPRINT
    assert keyset.jwks["keys"][0]["n"] == RFC7638_N
    assert keyset.jwks["keys"][0]["e"] == RFC7638_E


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384", "p521", "ed25519", "ed448"])
def test_thumbprint_of_every_key_kind(keys: dict[str, Any], kind: str) -> None:
    public = keys[kind].public_key()
    assert thumbprint(public) == expected_kid(public)


def test_different_keys_have_different_kids(keys: dict[str, Any]) -> None:
    kids = {thumbprint(keys[k].public_key()) for k in ("rsa", "rsa2", "rsa3", "p256", "p256b")}
    assert len(kids) == 5


# JWKS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ASYMMETRIC_ALGORITHMS))
def test_jwks_content(keys: dict[str, Any], tmp_path: Path, algorithm: str) -> None:
    key = keys[KIND_FOR[algorithm]]
    keyset = load_keys(settings_for(algorithm, write_private(tmp_path / "k.pem", key)))
    document = json.loads(json.dumps(keyset.jwks))  # plain JSON
    assert list(document) == ["keys"]
    [jwk] = document["keys"]
    members = jwk_members(key.public_key())
    assert {name: jwk[name] for name in members} == members
    assert jwk["kid"] == keyset.signing_kid == expected_kid(key.public_key())
    assert jwk["use"] == "sig"
    assert jwk["alg"] == algorithm
    assert not PRIVATE_MEMBERS & set(jwk), jwk


@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
def test_hmac_keys_and_empty_jwks(algorithm: str) -> None:
    secret = "é" * 30 + "-hmac-secret"
    keyset = load_keys(parse_settings({"JWTAPI_ALGORITHM": algorithm, "JWTAPI_SECRET_KEY": secret}))
    assert keyset.algorithm == algorithm
    assert keyset.jwks == {"keys": []}
    assert keyset.signing_key == secret.encode("utf-8")
    assert keyset.signing_kid is None
    assert dict(keyset.verification_keys) == {None: secret.encode("utf-8")}
    assert keyset.can_sign


def test_extra_public_keys_listed(keys: dict[str, Any], tmp_path: Path) -> None:
    private = write_private(tmp_path / "current.pem", keys["rsa"])
    old_pem = write_public(tmp_path / "old.pub.pem", keys["rsa2"])
    old_ssh = write_public(tmp_path / "older.pub", keys["rsa3"], openssh=True)
    keyset = load_keys(settings_for("RS256", private, extra=[old_pem, old_ssh]))
    kids = [expected_kid(keys[k].public_key()) for k in ("rsa", "rsa2", "rsa3")]
    assert keyset.signing_kid == kids[0]
    assert sorted(keyset.verification_keys, key=str) == sorted(kids)
    for kid, kind in zip(kids, ("rsa", "rsa2", "rsa3"), strict=True):
        assert spki(keyset.verification_keys[kid]) == spki(keys[kind].public_key())
    listed = keyset.jwks["keys"]
    assert sorted(jwk["kid"] for jwk in listed) == sorted(kids)
    assert all(jwk["use"] == "sig" and jwk["alg"] == "RS256" for jwk in listed)
    assert all(not PRIVATE_MEMBERS & set(jwk) for jwk in listed)


def test_extra_key_equal_to_current_is_listed_once(keys: dict[str, Any], tmp_path: Path) -> None:
    private = write_private(tmp_path / "current.pem", keys["p256"])
    same = write_public(tmp_path / "same.pub.pem", keys["p256"])
    keyset = load_keys(settings_for("ES256", private, extra=[same]))
    assert len(keyset.jwks["keys"]) == 1
    assert len(keyset.verification_keys) == 1


# Generating and writing key pairs -----------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ASYMMETRIC_ALGORITHMS))
def test_generate_and_write_key_pair(tmp_path: Path, algorithm: str) -> None:
    key = generate_private_key(algorithm)
    if algorithm[:2] in ("RS", "PS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size >= 2048
    elif algorithm.startswith("ES"):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        expected_curve = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
        assert key.curve.name == expected_curve[algorithm]
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)

    out = tmp_path / "new" / "keys"
    private, public = write_key_pair(key, out)
    assert private.parent == out == public.parent
    assert private.is_file()
    assert public.is_file()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PRIVATE" not in public.read_bytes()

    keyset = load_keys(settings_for(algorithm, private, public))
    assert_signs_with(keyset, key, algorithm)
    assert load_keys(settings_for(algorithm, public=public)).verification_keys.keys() == {
        keyset.signing_kid
    }


def test_write_key_pair_refuses_to_overwrite(keys: dict[str, Any], tmp_path: Path) -> None:
    private, public = write_key_pair(keys["ed25519"], tmp_path, stem="signing")
    before = (private.read_bytes(), public.read_bytes())
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(FileExistsError):
        write_key_pair(other, tmp_path, stem="signing")
    assert (private.read_bytes(), public.read_bytes()) == before


def test_write_key_pair_refuses_when_only_public_exists(
    keys: dict[str, Any], tmp_path: Path
) -> None:
    private, public = write_key_pair(keys["p256"], tmp_path / "first")
    target = tmp_path / "second"
    target.mkdir()
    (target / public.name).write_bytes(b"someone else's key")
    with pytest.raises(FileExistsError):
        write_key_pair(keys["p256"], target)
    assert not (target / private.name).exists()
    assert (target / public.name).read_bytes() == b"someone else's key"


@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
def test_no_key_pair_for_hmac(algorithm: str) -> None:
    with pytest.raises(ConfigError, match="JWTAPI_SECRET_KEY"):
        generate_private_key(algorithm)
