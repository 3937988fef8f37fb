"""Orders: a Flask app with its own users (Flask-SQLAlchemy) and jwtapi's token lifecycle."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jwtapi import Identity, JWTAuth, Token, current_user, token_required
from jwtapi.passwords import PasswordPolicyError, Passwords, check_password_policy

db = SQLAlchemy()
auth = JWTAuth()
passwords = Passwords()
bp = Blueprint("orders", __name__)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    password_hash: Mapped[str]
    scope: Mapped[str] = mapped_column(default="")  # space-separated, e.g. "admin"
    orders: Mapped[list[Order]] = relationship(order_by="Order.id")


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    item: Mapped[str]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "item": self.item, "user": self.user}


def find_user(name: str) -> User | None:
    return db.session.scalar(select(User).filter_by(name=name))


def add_user(name: str, password: str, scope: str = "", orders: Iterable[str] = ()) -> None:
    """Add a user and their ``orders`` (in an app context), keeping an argon2id hash only."""
    check_password_policy(password)
    user = User(name=name, password_hash=passwords.hash(password), scope=scope)
    user.orders = [Order(item=item) for item in orders]
    db.session.add(user)
    db.session.commit()


@auth.verify_password  # POST /auth/login
def verify_password(username: str, password: str) -> Identity | None:
    """The same argon2 work for an unknown user (a dummy hash) as for a wrong password."""
    user = find_user(username)
    if not passwords.verify(user.password_hash if user else None, password) or user is None:
        return None
    return Identity(user.name, scope=user.scope)


@auth.load_identity  # POST /auth/refresh
def load_identity(subject: str) -> Identity | None:
    """The scope as it stands now; a user who is gone ends the login."""
    user = find_user(subject)
    return Identity(user.name, scope=user.scope) if user else None


@auth.load_user
def load_user(token: Token) -> User | None:
    """What ``current_user`` is on a guarded route (once per request)."""
    return find_user(token.sub)


@bp.get("/orders")
@token_required
def my_orders() -> dict[str, Any]:
    """The orders of the token's user."""
    return {"user": current_user.name, "orders": [o.as_json() for o in current_user.orders]}


@bp.get("/admin/orders")
@token_required(scope="admin")
def all_orders() -> dict[str, Any]:
    return {"orders": [o.as_json() for o in db.session.scalars(select(Order).order_by(Order.id))]}


@bp.post("/password")
@token_required(fresh=True)  # only a token straight from a login with the password
def change_password() -> tuple[dict[str, Any], int]:
    """``{"password": "..."}``; then every login of the user ends, this one included."""
    new = (request.get_json(silent=True) or {}).get("password") or ""
    try:
        check_password_policy(new if isinstance(new, str) else "")
    except PasswordPolicyError as exc:
        return {"error": "invalid_request", "error_description": str(exc)}, 400
    current_user.password_hash = passwords.hash(new)
    db.session.commit()  # before the revocation: a login racing this needs the new password
    return {"revoked_logins": auth.revoke_user(current_user.name)}, 200


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app: settings from ``config`` over ``ORDERS_*`` (and ``JWTAPI_*``) variables."""
    instance = os.environ.get("ORDERS_INSTANCE_PATH") or Path(__file__).with_name("instance")
    app = Flask(__name__, instance_path=os.path.abspath(instance))
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///orders.sqlite3"  # in the instance path
    app.config.from_prefixed_env("ORDERS")  # ORDERS_SQLALCHEMY_DATABASE_URI=...
    app.config.update(config or {})
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)  # password hashes: private
    db.init_app(app)
    auth.init_app(app)
    app.register_blueprint(auth.blueprint, url_prefix="/auth")
    app.register_blueprint(bp)
    with app.app_context():
        db.create_all()
    return app
