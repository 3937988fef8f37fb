"""Configuration parsing: defaults, every refusal (one line naming the variable), .env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jwtapi.exceptions import ConfigError
from jwtapi.settings import (
    ALGORITHMS,
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    Settings,
    load_settings,
    parse_settings,
)

SECRET = "s3cret-Value-that-is-long-enough-for-HS512-0123456789abcdefghijkl"
EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JWTAPI_* of the developer's, and no .env of theirs in the working directory."""
    for name in list(os.environ):
        if name.startswith("JWTAPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config(**values: object) -> dict[str, object]:
    """JWTAPI_* values with a valid secret, ``NAME=value`` meaning ``JWTAPI_NAME``."""
    merged: dict[str, object] = {"JWTAPI_SECRET_KEY": SECRET}
    merged.update({f"JWTAPI_{name}": value for name, value in values.items()})
    return merged


def refused(values: dict[str, object], variable: str) -> str:
    """Assert ``values`` raise one ConfigError line that names ``variable``; return it."""
    with pytest.raises(ConfigError) as info:
        parse_settings(values)
    message = str(info.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, message
    assert "\r" not in message, message
    assert variable in message, message
    return message


# Defaults and accepted values ---------------------------------------------------------


def test_defaults() -> None:
    settings = parse_settings({"JWTAPI_SECRET_KEY": SECRET})
    assert settings.algorithm == "HS256"
    assert settings.is_hmac
    assert settings.secret_key == SECRET
    assert settings.private_key_file is None
    assert settings.public_key_file is None
    assert settings.extra_public_key_files == ()
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 1_209_600
    assert settings.issuer == "jwtapi"
    assert settings.audience is None
    assert settings.leeway == 0
    assert settings.database == "instance/jwtapi.sqlite3"
    assert settings.query_token is True
    assert settings.cookie_tokens is False
    assert settings.trusted_proxies == 0
    assert settings.login_rate_limit == "10/minute"


def test_empty_values_count_as_unset() -> None:
    values = config(
        ALGORITHM="",
        AUDIENCE="",
        ISSUER="",
        ACCESS_TOKEN_TTL="",
        LEEWAY="  ",
        QUERY_TOKEN="",
        DATABASE="",
        JWKS_URL="",
        REDIS_URL="",
        EXTRA_PUBLIC_KEY_FILES="",
    )
    assert parse_settings(values) == parse_settings(config())


def test_values_are_parsed() -> None:
    settings = parse_settings(
        config(
            ACCESS_TOKEN_TTL=" 60 ",
            REFRESH_TOKEN_TTL="3600",
            ISSUER="https://auth.example",
            AUDIENCE="orders-api",
            LEEWAY="30",
            DATABASE="/srv/jwtapi/users.sqlite3",
            QUERY_TOKEN="false",
            TRUSTED_PROXIES="2",
            LOGIN_RATE_LIMIT="5/second",
        )
    )
    assert settings.access_token_ttl == 60
    assert settings.refresh_token_ttl == 3600
    assert settings.issuer == "https://auth.example"
    assert settings.audience == "orders-api"
    assert settings.leeway == 30
    assert settings.database == "/srv/jwtapi/users.sqlite3"
    assert settings.query_token is False
    assert settings.trusted_proxies == 2
    assert settings.login_rate_limit == "5/second"


@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
def test_hmac_algorithms_accepted(algorithm: str) -> None:
    settings = parse_settings(config(ALGORITHM=algorithm))
    assert settings.algorithm == algorithm
    assert settings.is_hmac


@pytest.mark.parametrize("algorithm", sorted(ASYMMETRIC_ALGORITHMS))
def test_asymmetric_algorithms_accepted(algorithm: str, tmp_path: Path) -> None:
    key = tmp_path / "private.pem"
    settings = parse_settings({"JWTAPI_ALGORITHM": algorithm, "JWTAPI_PRIVATE_KEY_FILE": str(key)})
    assert settings.algorithm == algorithm
    assert not settings.is_hmac
    assert settings.private_key_file == key
    assert settings.secret_key is None


def test_every_contract_algorithm_is_known() -> None:
    expected = {
        f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)
    }
    assert expected | {"EdDSA"} == set(ALGORITHMS)


def test_verify_only_needs_only_public_key() -> None:
    settings = parse_settings({"JWTAPI_ALGORITHM": "ES256", "JWTAPI_PUBLIC_KEY_FILE": "pub.pem"})
    assert settings.private_key_file is None
    assert settings.public_key_file == Path("pub.pem")


def test_extra_public_key_files_are_split_on_commas() -> None:
    settings = parse_settings(
        {
            "JWTAPI_ALGORITHM": "RS256",
            "JWTAPI_PRIVATE_KEY_FILE": "k.pem",
            "JWTAPI_EXTRA_PUBLIC_KEY_FILES": "old1.pem, old2.pub ,",
        }
    )
    assert settings.extra_public_key_files == (Path("old1.pem"), Path("old2.pub"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_query_token_booleans(text: str, expected: bool) -> None:
    assert parse_settings(config(QUERY_TOKEN=text)).query_token is expected


@pytest.mark.parametrize("text", ["off", "OFF", " off "])
def test_rate_limit_off(text: str) -> None:
    assert parse_settings(config(LOGIN_RATE_LIMIT=text)).login_rate_limit is None


@pytest.mark.parametrize("text", ["10/minute", "1/second", "100 per hour", "5/day", "20/minutes"])
def test_rate_limit_accepted(text: str) -> None:
    assert parse_settings(config(LOGIN_RATE_LIMIT=text)).login_rate_limit == text


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("1", True)])
def test_cookie_tokens_setting(text: str, value: bool) -> None:
    assert parse_settings(config(COOKIE_TOKENS=text)).cookie_tokens is value
    assert parse_settings(config()).cookie_tokens is False


# The secret ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["a" * 32, "é" * 16, "€" * 10 + "ab", "a" * 100],
    ids=["32-ascii", "16-two-byte-chars", "10-three-byte-chars-plus-2", "100-ascii"],
)
def test_secret_of_32_utf8_bytes_accepted(secret: str) -> None:
    assert len(secret.encode("utf-8")) >= 32
    assert parse_settings({"JWTAPI_SECRET_KEY": secret}).secret_key == secret


@pytest.mark.parametrize(
    "secret",
    ["Q" * 31, "é" * 15 + "Q", "€" * 10 + "Q", "Q7#"],
    ids=["31-ascii", "31-bytes-16-chars", "31-bytes-11-chars", "3-bytes"],
)
@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
def test_secret_under_32_utf8_bytes_refused(secret: str, algorithm: str) -> None:
    assert len(secret.encode("utf-8")) < 32
    message = refused({"JWTAPI_SECRET_KEY": secret, "JWTAPI_ALGORITHM": algorithm}, "SECRET_KEY")
    assert "JWTAPI_SECRET_KEY" in message
    assert secret not in message


@pytest.mark.parametrize(("algorithm", "minimum"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_secret_at_least_as_long_as_the_hash(algorithm: str, minimum: int) -> None:
    """RFC 7518 section 3.2: a key of the hash's size or larger MUST be used."""
    values = {"JWTAPI_ALGORITHM": algorithm}
    assert parse_settings({**values, "JWTAPI_SECRET_KEY": "k" * minimum}).algorithm == algorithm
    message = refused({**values, "JWTAPI_SECRET_KEY": "k" * (minimum - 1)}, "SECRET_KEY")
    assert f"at least {minimum} bytes" in message


@pytest.mark.parametrize("algorithm", sorted(HMAC_ALGORITHMS))
@pytest.mark.parametrize("values", [{}, {"JWTAPI_SECRET_KEY": ""}, {"JWTAPI_SECRET_KEY": "   "}])
def test_missing_secret_refused(algorithm: str, values: dict[str, object]) -> None:
    refused({**values, "JWTAPI_ALGORITHM": algorithm}, "JWTAPI_SECRET_KEY")


def test_secret_is_kept_as_written() -> None:
    secret = "  padded secret with spaces, 32+ bytes  "
    assert parse_settings({"JWTAPI_SECRET_KEY": secret}).secret_key == secret


def test_repr_never_shows_the_secret() -> None:
    settings = parse_settings({"JWTAPI_SECRET_KEY": SECRET})
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert SECRET not in text
        assert SECRET[:16] not in text
    assert "HS256" in repr(settings)


def test_repr_of_settings_built_directly() -> None:
    settings = Settings(secret_key=SECRET)
    assert SECRET not in repr(settings)


# Refusals -----------------------------------------------------------------------------

BAD_VALUES = [
    ({"ALGORITHM": "none"}, "JWTAPI_ALGORITHM"),
    ({"ALGORITHM": "HS1"}, "JWTAPI_ALGORITHM"),
    ({"ALGORITHM": "hs256"}, "JWTAPI_ALGORITHM"),
    ({"ALGORITHM": "RSA-OAEP"}, "JWTAPI_ALGORITHM"),
    ({"ACCESS_TOKEN_TTL": "0"}, "JWTAPI_ACCESS_TOKEN_TTL"),
    ({"ACCESS_TOKEN_TTL": "-5"}, "JWTAPI_ACCESS_TOKEN_TTL"),
    ({"ACCESS_TOKEN_TTL": "abc"}, "JWTAPI_ACCESS_TOKEN_TTL"),
    ({"ACCESS_TOKEN_TTL": "1.5"}, "JWTAPI_ACCESS_TOKEN_TTL"),
    ({"REFRESH_TOKEN_TTL": "0"}, "JWTAPI_REFRESH_TOKEN_TTL"),
    ({"REFRESH_TOKEN_TTL": "-5"}, "JWTAPI_REFRESH_TOKEN_TTL"),
    ({"REFRESH_TOKEN_TTL": "abc"}, "JWTAPI_REFRESH_TOKEN_TTL"),
    ({"REFRESH_TOKEN_TTL": "1.5"}, "JWTAPI_REFRESH_TOKEN_TTL"),
    ({"LEEWAY": "-1"}, "JWTAPI_LEEWAY"),
    ({"LEEWAY": "-30"}, "JWTAPI_LEEWAY"),
    ({"LEEWAY": "soon"}, "JWTAPI_LEEWAY"),
    ({"TRUSTED_PROXIES": "-1"}, "JWTAPI_TRUSTED_PROXIES"),
    ({"TRUSTED_PROXIES": "many"}, "JWTAPI_TRUSTED_PROXIES"),
    ({"QUERY_TOKEN": "maybe"}, "JWTAPI_QUERY_TOKEN"),
    ({"QUERY_TOKEN": "2"}, "JWTAPI_QUERY_TOKEN"),
    ({"QUERY_TOKEN": "tru"}, "JWTAPI_QUERY_TOKEN"),
    ({"COOKIE_TOKENS": "maybe"}, "JWTAPI_COOKIE_TOKENS"),
    ({"LOGIN_RATE_LIMIT": "ten per minute"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "10"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "10/fortnight"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "-1/minute"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "0/minute"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "0 per hour"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "10/minute\nX: y"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"LOGIN_RATE_LIMIT": "no"}, "JWTAPI_LOGIN_RATE_LIMIT"),
    ({"REDIS_URL": "http://localhost:6379/0"}, "JWTAPI_REDIS_URL"),
    ({"REDIS_URL": "localhost:6379"}, "JWTAPI_REDIS_URL"),
    ({"REDIS_URL": "redis://localhost:63x9/0"}, "JWTAPI_REDIS_URL"),
    ({"REDIS_URL": "redis://localhost:99999/0"}, "JWTAPI_REDIS_URL"),
    ({"REDIS_URL": "redis://localhost:6379/zero"}, "JWTAPI_REDIS_URL"),
    ({"DATABASE": "sqlite:///x.db"}, "JWTAPI_DATABASE"),
    ({"DATABASE": "mysql://u:p@h/db"}, "JWTAPI_DATABASE"),
    ({"DATABASE": "postgresql://h:port/db"}, "JWTAPI_DATABASE"),
    ({"DATABASE": "postgresql://h:70000/db"}, "JWTAPI_DATABASE"),
    ({"DATABASE": "postgresql://h/db?sslmode"}, "JWTAPI_DATABASE"),
    ({"JWKS_URL": "https://auth.example/.well-known/jwks.json"}, "JWTAPI_JWKS_URL"),
]


@pytest.mark.parametrize(
    ("values", "variable"), BAD_VALUES, ids=[f"{v}={d}" for d, v in BAD_VALUES]
)
def test_bad_value_refused_with_one_line_naming_it(values: dict[str, str], variable: str) -> None:
    message = refused(config(**values), variable)
    assert SECRET not in message


@pytest.mark.parametrize("algorithm", sorted(ASYMMETRIC_ALGORITHMS))
def test_asymmetric_without_key_file_refused(algorithm: str) -> None:
    message = refused(config(ALGORITHM=algorithm), "JWTAPI_PRIVATE_KEY_FILE")
    assert SECRET not in message


@pytest.mark.parametrize("variable", ["ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL"])
@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_ttl_native_values_refused(variable: str, value: object) -> None:
    refused(config(**{variable: value}), f"JWTAPI_{variable}")


def test_native_int_ttl_accepted() -> None:
    assert parse_settings(config(ACCESS_TOKEN_TTL=42)).access_token_ttl == 42


# .env and the environment -------------------------------------------------------------


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"JWTAPI_{k}={v}\n" for k, v in values.items()), "utf-8")
    return path


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    dotenv = write_env(
        tmp_path / "custom.env", SECRET_KEY=SECRET, ISSUER="from-dotenv", ACCESS_TOKEN_TTL="60"
    )
    settings = load_settings(dotenv_path=dotenv)
    assert settings.secret_key == SECRET
    assert settings.issuer == "from-dotenv"
    assert settings.access_token_ttl == 60


def test_dotenv_in_working_directory_is_the_default(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", SECRET_KEY=SECRET, AUDIENCE="cwd-audience")
    settings = load_settings()
    assert settings.audience == "cwd-audience"
    assert settings.secret_key == SECRET


def test_dotenv_of_a_parent_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".env", SECRET_KEY=SECRET)
    child = tmp_path / "child"
    child.mkdir()
    monkeypatch.chdir(child)
    with pytest.raises(ConfigError, match="JWTAPI_SECRET_KEY"):
        load_settings()


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = write_env(
        tmp_path / ".env", SECRET_KEY=SECRET, ISSUER="from-dotenv", ACCESS_TOKEN_TTL="60"
    )
    monkeypatch.setenv("JWTAPI_ISSUER", "from-environment")
    settings = load_settings(dotenv_path=dotenv)
    assert settings.issuer == "from-environment"
    assert settings.access_token_ttl == 60  # not in the environment: .env still counts


def test_environment_secret_wins_over_dotenv_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = write_env(tmp_path / ".env", SECRET_KEY="d" * 40)
    monkeypatch.setenv("JWTAPI_SECRET_KEY", "e" * 40)
    assert load_settings(dotenv_path=dotenv).secret_key == "e" * 40


def test_invalid_environment_value_beats_valid_dotenv_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = write_env(tmp_path / ".env", SECRET_KEY=SECRET, LEEWAY="5")
    monkeypatch.setenv("JWTAPI_LEEWAY", "-5")
    with pytest.raises(ConfigError, match="JWTAPI_LEEWAY"):
        load_settings(dotenv_path=dotenv)


def test_overrides_win_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWTAPI_SECRET_KEY", SECRET)
    monkeypatch.setenv("JWTAPI_ISSUER", "from-environment")
    settings = load_settings({"JWTAPI_ISSUER": "override"}, dotenv_path=tmp_path / "none.env")
    assert settings.issuer == "override"


def test_environment_alone_without_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWTAPI_SECRET_KEY", SECRET)
    monkeypatch.setenv("JWTAPI_REFRESH_TOKEN_TTL", "7200")
    settings = load_settings(dotenv_path=tmp_path / "missing.env")
    assert settings.refresh_token_ttl == 7200


def test_missing_everything_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWTAPI_SECRET_KEY") as info:
        load_settings(dotenv_path=tmp_path / "missing.env")
    assert "\n" not in str(info.value)


def test_error_from_dotenv_never_shows_the_secret(tmp_path: Path) -> None:
    short = "short-but-secret-31-bytes-xxxxx"
    assert len(short.encode()) == 31
    dotenv = write_env(tmp_path / ".env", SECRET_KEY=short)
    with pytest.raises(ConfigError) as info:
        load_settings(dotenv_path=dotenv)
    assert "JWTAPI_SECRET_KEY" in str(info.value)
    assert short not in str(info.value)
    assert short not in repr(info.value)


def test_env_example_parses_once_a_secret_is_set(tmp_path: Path) -> None:
    text = EXAMPLE.read_text("utf-8")
    assert "JWTAPI_SECRET_KEY=\n" in text
    dotenv = tmp_path / ".env"
    dotenv.write_text(text.replace("JWTAPI_SECRET_KEY=\n", f"JWTAPI_SECRET_KEY={SECRET}\n"))
    assert load_settings(dotenv_path=dotenv) == parse_settings({"JWTAPI_SECRET_KEY": SECRET})


def test_env_example_without_secret_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWTAPI_SECRET_KEY"):
        load_settings(dotenv_path=EXAMPLE)


def test_access_ttl_longer_than_refresh_ttl_refused() -> None:
    message = refused(
        {
            "JWTAPI_SECRET_KEY": SECRET,
            "JWTAPI_ACCESS_TOKEN_TTL": "600",
            "JWTAPI_REFRESH_TOKEN_TTL": "60",
        },
        "JWTAPI_ACCESS_TOKEN_TTL",
    )
    assert "REFRESH_TOKEN_TTL" in message


@pytest.mark.parametrize("name", ["ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "LEEWAY"])
def test_durations_are_bounded(name: str) -> None:
    refused({"JWTAPI_SECRET_KEY": SECRET, f"JWTAPI_{name}": "10000000000000000000"}, name)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://jwtapi:pw@db.internal:5432/jwtapi",
        "postgres://db.internal/jwtapi?sslmode=verify-full",
        "postgresql://u:pw@h1:5432,h2:5433/jwtapi?target_session_attrs=read-write",
        "postgresql:///jwtapi?host=/var/run/postgresql",
    ],
)
def test_postgresql_urls_accepted(url: str) -> None:
    assert parse_settings(config(DATABASE=url)).database == url


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://:pw@cache.internal:6380/2", "unix:///run/redis.sock"],
)
def test_redis_urls_accepted(url: str) -> None:
    assert parse_settings(config(REDIS_URL=url)).redis_url == url


def test_url_passwords_never_reach_repr_or_errors() -> None:
    settings = parse_settings(
        config(
            DATABASE="postgresql://jwtapi:db-pass-123@h/jwtapi",
            REDIS_URL="redis://user:redis-pass-456@h:6379/0",
        )
    )
    text = repr(settings)
    assert "db-pass-123" not in text
    assert "redis-pass-456" not in text
    assert "postgresql://jwtapi:***@h/jwtapi" in text
    assert "redis://user:***@h:6379/0" in text
    in_query = parse_settings(
        config(
            DATABASE="postgresql://h/jwtapi?user=u&password=db-pass-123&sslmode=require",
            REDIS_URL="redis://h:6379/0?PASSWORD=redis-pass-456",
        )
    )
    assert "db-pass-123" not in repr(in_query)
    assert "redis-pass-456" not in repr(in_query)
    assert "user=u&password=***&sslmode=require" in repr(in_query)
    bad = refused(config(DATABASE="postgresql://u:db-pass-123@h:x/db"), "JWTAPI_DATABASE")
    assert "db-pass-123" not in bad
    bad = refused(config(REDIS_URL="redis://:redis-pass-456@h:x/0"), "JWTAPI_REDIS_URL")
    assert "redis-pass-456" not in bad


def test_dotenv_is_not_interpolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWTAPI_SECRET_KEY", raising=False)
    secret = "literal-${HOME}-" + "x" * 60
    (tmp_path / ".env").write_text(f"JWTAPI_SECRET_KEY='{secret}'\n")
    assert load_settings(dotenv_path=tmp_path / ".env").secret_key == secret


def test_dotenv_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"JWTAPI_SECRET_KEY=\xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8") as info:
        load_settings(dotenv_path=tmp_path / ".env")
    assert "\n" not in str(info.value)


def test_public_url_is_kept_without_its_trailing_slash() -> None:
    assert parse_settings(config()).public_url is None
    assert parse_settings(config(PUBLIC_URL="")).public_url is None
    url = parse_settings(config(PUBLIC_URL="https://auth.example.test/base/")).public_url
    assert url == "https://auth.example.test/base"


@pytest.mark.parametrize(
    "value",
    [
        "ftp://auth.example.test",
        "auth.example.test",
        "https://",
        "https://auth.example.test/?x=1",
        "https://auth.example.test/#top",
        "https://user:pw@auth.example.test",
    ],
)
def test_a_bad_public_url_is_one_line_naming_it(value: str) -> None:
    message = refused(config(PUBLIC_URL=value), "PUBLIC_URL")
    assert "pw" not in message
