"""Opt-in user authentication: a signed JWT bearer token whose ``sub`` must be the cart's user."""

from __future__ import annotations

import os
import time
from typing import Any, Final

import attrs
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.exceptions import InvalidSubjectError
from jwt.utils import is_pem_format, is_ssh_key

from trioshop.http.errors import ApiError

# The token issuer's clock and ours differ by a few seconds even under NTP. Without slack a token
# minted on a host slightly ahead of us is refused as not yet valid (iat/nbf), and expiry is
# decided by whichever clock runs behind. 30 s absorbs ordinary drift and lengthens a token's
# life by at most 30 s.
LEEWAY_SECONDS: Final = 30

# RFC 7518 §3.2: an HS256 key MUST be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES: Final = 32
# NIST SP 800-131A: RSA keys under 2048 bits are no longer acceptable for signatures.
MIN_RSA_KEY_BITS: Final = 2048
DEFAULT_TTL_SECONDS: Final = 3600
SECRET_ENV: Final = "TRIOSHOP_AUTH_SECRET"

REALM: Final = "trioshop"
_CHALLENGE: Final = f'Bearer realm="{REALM}"'
_REQUIRED_CLAIMS: Final = ["exp", "sub"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# How a token PyJWT refused is answered: the first row whose error class matches gives the 401's
# message and its RFC 6750 error_description ({algorithm}: the one accepted, {claim}: the one
# missing). The last row matches every refusal.
_REJECTIONS: Final[tuple[tuple[type[jwt.InvalidTokenError], str, str], ...]] = (
    (jwt.ExpiredSignatureError, "Bearer token has expired; get a new token", "token expired"),
    (
        jwt.ImmatureSignatureError,
        "Bearer token is not valid yet; check the issuer's clock and retry later",
        "token not yet valid",
    ),
    (
        jwt.MissingRequiredClaimError,
        "Bearer token must carry 'exp' and 'sub' claims; get a token that has both",
        "token lacks the {claim} claim",
    ),
    (
        jwt.InvalidAlgorithmError,
        "Bearer token must be signed with {algorithm}; get a token signed with it",
        "algorithm not allowed, expected {algorithm}",
    ),
    (
        jwt.InvalidSignatureError,
        "Bearer token signature does not verify; get a token signed with this server's key",
        "signature invalid",
    ),
    (
        InvalidSubjectError,
        "Bearer token 'sub' must be the user id; get a token issued for your user",
        "sub must be a non-empty string",
    ),
    (
        jwt.InvalidAudienceError,
        "Bearer token names an audience this server does not accept; get one without 'aud'",
        "audience not accepted",
    ),
    (
        jwt.DecodeError,
        "Bearer token is not a well-formed JWT; send the token exactly as issued",
        "token malformed",
    ),
    (jwt.InvalidTokenError, "Bearer token is invalid; get a new token", "token invalid"),
)


def _unauthorized(message: str, description: str | None = None) -> ApiError:
    """A 401 with an RFC 6750 challenge; *description* (a bad token was sent) adds the error."""
    challenge = _CHALLENGE
    if description is not None:
        challenge += f', error="invalid_token", error_description="{description}"'
    return ApiError(401, message, {"WWW-Authenticate": challenge})


def _check_secret(secret: str) -> None:
    """Raise ValueError unless *secret* is usable as an HS256 key."""
    encoded = secret.encode()
    if is_pem_format(encoded) or is_ssh_key(encoded):
        raise ValueError(
            "the auth secret looks like a PEM or SSH key; pass a public key file with "
            "--auth-public-key FILE instead of --auth-secret"
        )
    if len(encoded) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the auth secret is {len(encoded)} bytes; HS256 needs at least {MIN_SECRET_BYTES} "
            "(generate one with: openssl rand -hex 32)"
        )


def _public_key_from_pem(data: bytes, source: str) -> tuple[str, PublicKey]:
    """The JWT algorithm and key of PEM *data*; ValueError (naming *source*) when unusable."""
    if b"PRIVATE KEY-----" in data:
        raise ValueError(
            f"{source} holds a private key; pass its public half "
            "(openssl pkey -in KEY.pem -pubout -out PUBLIC.pem)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            f"{source} is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----')"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(
                f"{source} is a {key.key_size}-bit RSA key; RS256 needs at least "
                f"{MIN_RSA_KEY_BITS} bits"
            )
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(
                f"{source} is an EC key on curve {key.curve.name}; ES256 needs a P-256 "
                "(prime256v1) key"
            )
        return "ES256", key
    raise ValueError(
        f"{source} holds a key of type {type(key).__name__.removesuffix('PublicKey')}; "
        "pass an RSA (RS256) or EC P-256 (ES256) public key, or use --auth-secret for HS256"
    )


def _validate_key(instance: UserAuth, attribute: attrs.Attribute[Any], key: object) -> None:
    """Refuse a key that does not fit the algorithm, so no token can pick its own check."""
    expected: dict[str, type] = {
        "HS256": str, "RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey,
    }
    if instance.algorithm not in expected:
        raise ValueError(f"auth algorithm must be HS256, RS256 or ES256, not {instance.algorithm}")
    if not isinstance(key, expected[instance.algorithm]):
        raise ValueError(f"auth key type {type(key).__name__} does not fit {instance.algorithm}")
    if isinstance(key, str):
        _check_secret(key)


@attrs.frozen(kw_only=True)
class UserAuth:
    """Checks ``Authorization: Bearer <JWT>`` against one configured algorithm and key.

    Build it with :meth:`from_secret` (HS256), :meth:`from_public_key_file` (RS256 or ES256,
    following the key type) or :meth:`from_options` (the CLI's two flags).
    """

    algorithm: str
    key: str | PublicKey = attrs.field(repr=False, validator=_validate_key)
    leeway: float = LEEWAY_SECONDS

    @classmethod
    def from_secret(cls, secret: str) -> UserAuth:
        """HS256 with a shared *secret*; ValueError if it is shorter than 32 bytes or a PEM key."""
        return cls(algorithm="HS256", key=secret)

    @classmethod
    def from_public_key_file(cls, path: str | os.PathLike[str]) -> UserAuth:
        """RS256 for an RSA, ES256 for an EC P-256 PEM public key at *path*.

        Raises ValueError with a one-line reason when the file cannot be read, is not a PEM
        public key, or holds a key of another type, curve or a too short RSA modulus.
        """
        source = f"auth public key {os.fspath(path)}"
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as error:
            raise ValueError(f"cannot read {source}: {error.strerror or error}") from None
        algorithm, key = _public_key_from_pem(data, source)
        return cls(algorithm=algorithm, key=key)

    @classmethod
    def from_options(
        cls, *, secret: str | None, public_key_file: str | os.PathLike[str] | None
    ) -> UserAuth | None:
        """From ``--auth-secret`` / ``--auth-public-key``: None when neither is given (auth off).

        Raises ValueError when both are given, or as :meth:`from_secret` and
        :meth:`from_public_key_file` do.
        """
        if secret is not None and public_key_file is not None:
            raise ValueError("pass either --auth-secret or --auth-public-key, not both")
        if secret is not None:
            return cls.from_secret(secret)
        if public_key_file is not None:
            return cls.from_public_key_file(public_key_file)
        return None

    def authenticate(self, authorization: str | None) -> str:
        """The user (``sub``) of the bearer token in *authorization*, the header's value.

        Raises a 401 :class:`ApiError` with ``WWW-Authenticate`` when the header is missing,
        not ``Bearer <token>``, or the token is malformed, badly signed, signed with another
        algorithm, expired (beyond the leeway), not yet valid, or lacks ``exp`` or a string ``sub``.
        """
        if not authorization or not authorization.strip():
            raise _unauthorized(
                "This route needs the header 'Authorization: Bearer <token>'; send a token for "
                "this user"
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthorized(
                "Authorization must use the Bearer scheme; send 'Authorization: Bearer <token>'"
            )
        token = token.strip()
        if not token or " " in token:
            raise _unauthorized(
                "Bearer token is missing or malformed; send 'Authorization: Bearer <token>'",
                "token malformed",
            )
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                options={"require": _REQUIRED_CLAIMS},
                leeway=self.leeway,
            )
        except jwt.InvalidTokenError as error:
            raise self._rejected(error) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise self._rejected(InvalidSubjectError())
        return subject

    def check(self, authorization: str | None, user_id: str) -> None:
        """Let the request through only with a valid bearer token for *user_id*.

        Raises a 401 :class:`ApiError` as :meth:`authenticate` does, and a 403 one when the
        token is valid but its ``sub`` is another user.
        """
        if self.authenticate(authorization) != user_id:
            raise ApiError(
                403, "Bearer token belongs to another user; use a token issued for this user"
            )

    def _rejected(self, error: jwt.InvalidTokenError) -> ApiError:
        """The 401 answering a token that PyJWT refused with *error*: its row of
        :data:`_REJECTIONS`."""
        _, message, description = next(row for row in _REJECTIONS if isinstance(error, row[0]))
        facts = {"algorithm": self.algorithm, "claim": getattr(error, "claim", "")}
        return _unauthorized(message.format(**facts), description.format(**facts))


def mint_token(secret: str, user_id: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> str:
    """An HS256 token for *user_id*, valid *ttl_seconds* from now, for local testing.

    Raises ValueError for a secret :meth:`UserAuth.from_secret` refuses, an empty *user_id*,
    or a *ttl_seconds* below 1.
    """
    _check_secret(secret)
    if not user_id:
        raise ValueError("user_id must not be empty")
    if ttl_seconds < 1:
        raise ValueError("ttl_seconds must be at least 1")
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")
