"""First-run set-up for ``make run``: a ``.env`` with a fresh secret, and a first user.

Run as ``python -m jwtapi.quickstart`` in the project directory. It changes nothing that
already exists: an existing ``.env`` is kept, and a database with users gets no new one.
The first user's random password is printed once, here, and stored only as its hash.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

from jwtapi.exceptions import ConfigError
from jwtapi.passwords import Passwords
from jwtapi.settings import load_settings
from jwtapi.stores import open_user_store
from jwtapi.stores.base import StoreError

FIRST_USER = "demo"
FIRST_USER_SCOPE = "admin"


def write_env(env_path: Path, example_path: Path) -> bool:
    """Write ``env_path`` from ``example_path`` with a new random secret; False if it exists."""
    if env_path.exists():
        return False
    template = example_path.read_text("utf-8") if example_path.is_file() else ""
    secret = secrets.token_urlsafe(48)  # 64 characters, 384 random bits
    line = f"JWTAPI_SECRET_KEY={secret}"
    if re.search(r"(?m)^JWTAPI_SECRET_KEY=.*$", template):
        text = re.sub(r"(?m)^JWTAPI_SECRET_KEY=.*$", lambda _: line, template, count=1)
    else:
        text = template + ("" if template.endswith("\n") or not template else "\n") + line + "\n"
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def ensure_first_user(database: str) -> str | None:
    """Create the first user when there is none; return its password, else None."""
    users = open_user_store(database)
    if users.count() > 0:
        return None
    password = secrets.token_urlsafe(18)
    users.add(FIRST_USER, Passwords().hash(password), FIRST_USER_SCOPE)
    return password


def main() -> int:
    """Set up ``.env`` and the first user in the working directory."""
    cwd = Path.cwd()
    try:
        if write_env(cwd / ".env", cwd / ".env.example"):
            print("jwtapi: wrote .env with a fresh random JWTAPI_SECRET_KEY")
        settings = load_settings()
        password = ensure_first_user(settings.database)
    except (ConfigError, StoreError, OSError) as exc:
        print(f"jwtapi: error: {exc}", file=sys.stderr)
        return 1
    if password is not None:
        print(
            f"jwtapi: created user {FIRST_USER!r} (scope {FIRST_USER_SCOPE!r}) "
            f"with password: {password}\n"
            "jwtapi: this password is shown only once; change it with "
            f"`jwtapi users passwd {FIRST_USER}`"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
