"""Who is calling, and may they: App JWTs, installation tokens, user tokens.

Mirrors GitHub's rules closely enough that a client which authenticates
wrongly against the sandbox would also fail against GitHub: the JWT must be
RS256 with the App id as issuer and at most ten minutes of life, installation
tokens expire after an hour and carry only the repositories and permissions
they were minted for.
"""

from __future__ import annotations

import functools
import secrets
import time
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.errors import ApiError

JWT_MAX_LIFETIME_S = 600
CLOCK_DRIFT_S = 60
TOKEN_LIFETIME_S = 3600
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
INSTALLATION_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "pull_requests": "write",
    "metadata": "read",
    "members": "read",
}


AuthError = ApiError


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials")


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    kind is "app" (JWT), "installation" (ghs_ token) or "user" (a personal ghp_
    token, or a ghu_ user access token of the App's OAuth client: `via_app`).
    `repos` is None when not narrowed to particular repositories.
    """

    kind: str
    login: str
    installation_id: int | None = None
    repos: frozenset[str] | None = None
    permissions: dict[str, str] = field(default_factory=dict)
    token: str = field(default="", repr=False, compare=False)  # the credential (for revoking)
    # A user access token acts for the user only where the App is installed, and only
    # within the App's permissions (GitHub's user-to-server rule).
    via_app: bool = False
    # The App behind an "app" or "installation" caller; None: the sandbox's default App.
    app_id: int | None = None


def generate_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@functools.lru_cache(maxsize=16)
def public_key_pem(private_pem: str) -> str:
    """The App's public key, derived once per key (loading a PEM costs milliseconds)."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def verify_app_jwt(token: str, public_pem: str, app_id: int, now: float | None = None) -> None:
    """Accept only a JWT GitHub would accept for this App; raise AuthError otherwise."""
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            public_pem,
            algorithms=["RS256"],
            options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(401, "A JSON web token could not be decoded") from exc
    if str(claims["iss"]) != str(app_id):
        raise bad_credentials()
    exp, iat = float(claims["exp"]), float(claims["iat"])
    if exp <= now:
        raise AuthError(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        )
    if exp - now > JWT_MAX_LIFETIME_S + CLOCK_DRIFT_S or exp - iat > JWT_MAX_LIFETIME_S + 1:
        raise AuthError(401, "'Expiration time' claim ('exp') is too far in the future")
    if iat > now + CLOCK_DRIFT_S:
        raise AuthError(
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        )


def jwt_issuer(token: str) -> str:
    """The `iss` claim of an App JWT, read before its signature is checked: it names the
    App whose key must verify it (every App has its own key)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(401, "A JSON web token could not be decoded") from exc
    return str(claims.get("iss", ""))


def client_id_of(app_id: int) -> str:
    """The App's OAuth client id (GitHub Apps' client ids start with `Iv1.`)."""
    return f"Iv1.{int(app_id):016x}"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(27).replace("-", "A").replace("_", "B")[:36]


def allows(permissions: dict[str, str], resource: str, level: str) -> bool:
    return LEVELS.get(permissions.get(resource, "none"), 0) >= LEVELS[level]


def narrow_permissions(granted: dict[str, str], requested: dict[str, str] | None) -> dict[str, str]:
    """The permissions of a token asked for `requested`, refusing any escalation (422)."""
    if not requested:
        return dict(granted)
    for resource, level in requested.items():
        if level not in LEVELS or not allows(granted, resource, level):
            raise AuthError(422, "The permissions requested are not granted to this installation.")
    narrowed = dict(requested)
    narrowed.setdefault("metadata", "read")
    return narrowed
