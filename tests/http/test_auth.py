"""User authentication: real HS256, RS256 and ES256 tokens checked by trioshop.http.auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trioshop.http.auth import LEEWAY_SECONDS, UserAuth, mint_token
from trioshop.http.errors import ApiError

SECRET = "test-secret-" + "x" * 32
CHALLENGE = 'Bearer realm="trioshop"'


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write(tmp_path: Path, data: bytes, name: str = "key.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def claims(sub: Any = "alice", *, expires_in: float = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": int(now + expires_in), **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, so PyJWT's own refusals cannot stop a forged one being made."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


def rejected(auth: UserAuth, header: str | None, user_id: str = "alice") -> ApiError:
    with pytest.raises(ApiError) as caught:
        auth.check(header, user_id)
    return caught.value


def assert_invalid_token(error: ApiError) -> None:
    assert error.status == 401
    challenge = error.headers["WWW-Authenticate"]
    assert challenge.startswith(CHALLENGE + ', error="invalid_token", error_description="')


@pytest.fixture
def hs_auth() -> UserAuth:
    return UserAuth.from_secret(SECRET)


@pytest.fixture
def rs_auth(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> UserAuth:
    return UserAuth.from_public_key_file(write(tmp_path, public_pem(rsa_key)))


@pytest.fixture
def es_auth(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> UserAuth:
    return UserAuth.from_public_key_file(write(tmp_path, public_pem(ec_key)))


def test_hs256_token_for_the_user_passes(hs_auth: UserAuth) -> None:
    """A valid HS256 token whose sub is the user passes, with any case of 'Bearer'."""
    hs_auth.check(f"Bearer {hs256(claims())}", "alice")
    hs_auth.check(f"bearer  {hs256(claims())} ", "alice")
    assert hs_auth.authenticate(f"Bearer {hs256(claims('bob'))}") == "bob"


def test_rs256_token_for_the_user_passes(rs_auth: UserAuth, rsa_key: rsa.RSAPrivateKey) -> None:
    """An RSA public key selects RS256 and a token signed by its private key passes."""
    assert rs_auth.algorithm == "RS256"
    rs_auth.check(f"Bearer {jwt.encode(claims(), rsa_key, algorithm='RS256')}", "alice")


def test_es256_token_for_the_user_passes(
    es_auth: UserAuth, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """An EC P-256 public key selects ES256 and a token signed by its private key passes."""
    assert es_auth.algorithm == "ES256"
    es_auth.check(f"Bearer {jwt.encode(claims(), ec_key, algorithm='ES256')}", "alice")


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_401_without_error_code(hs_auth: UserAuth, header: str | None) -> None:
    """No credentials: 401 with the bare challenge, as RFC 6750 §3.1 asks."""
    error = rejected(hs_auth, header)
    assert error.status == 401
    assert error.headers == {"WWW-Authenticate": CHALLENGE}
    assert "Authorization: Bearer <token>" in error.message


def test_wrong_scheme_is_401(hs_auth: UserAuth) -> None:
    """A Basic (or any non-Bearer) header is 401 with the challenge."""
    error = rejected(hs_auth, f"Basic {hs256(claims())}")
    assert error.status == 401
    assert error.headers == {"WWW-Authenticate": CHALLENGE}


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer a b", "Bearer ..."]
)
def test_garbage_token_is_401(hs_auth: UserAuth, header: str) -> None:
    """An empty, space-split or undecodable token is 401 invalid_token."""
    assert_invalid_token(rejected(hs_auth, header))


def test_tampered_signature_is_401(hs_auth: UserAuth) -> None:
    """A token whose payload was changed after signing is 401 invalid_token."""
    head, _, signature = hs256(claims("bob")).split(".")
    forged_payload = b64(json.dumps(claims("alice")).encode())
    error = rejected(hs_auth, f"Bearer {head}.{forged_payload}.{signature}")
    assert_invalid_token(error)
    assert 'error_description="signature invalid"' in error.headers["WWW-Authenticate"]


def test_token_signed_with_another_secret_is_401(hs_auth: UserAuth) -> None:
    """An HS256 token signed with a different secret is 401 invalid_token."""
    assert_invalid_token(rejected(hs_auth, f"Bearer {hs256(claims(), 'another-' + SECRET)}"))


def test_token_signed_with_another_rsa_key_is_401(rs_auth: UserAuth) -> None:
    """An RS256 token from a key other than the configured one is 401 invalid_token."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid_token(rejected(rs_auth, f"Bearer {jwt.encode(claims(), other, 'RS256')}"))


@pytest.mark.parametrize("auth_name", ["hs_auth", "rs_auth"])
def test_alg_none_token_is_401(auth_name: str, request: pytest.FixtureRequest) -> None:
    """An unsigned 'alg: none' token is never accepted."""
    auth: UserAuth = request.getfixturevalue(auth_name)
    for alg in ("none", "None", "NONE"):
        token = raw_token({"alg": alg, "typ": "JWT"}, claims(), None)
        error = rejected(auth, f"Bearer {token}")
        assert_invalid_token(error)
        assert "algorithm not allowed" in error.headers["WWW-Authenticate"]


def test_hs256_signed_with_public_key_is_401(
    rs_auth: UserAuth, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The key-confusion attack (HS256 keyed with the RS256 public key PEM) is refused."""
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), public_pem(rsa_key))
    error = rejected(rs_auth, f"Bearer {token}")
    assert_invalid_token(error)
    assert "expected RS256" in error.headers["WWW-Authenticate"]


def test_rs256_token_when_configured_for_hs256_is_401(
    hs_auth: UserAuth, rsa_key: rsa.RSAPrivateKey
) -> None:
    """A correctly signed token of an algorithm other than the configured one is refused."""
    assert_invalid_token(rejected(hs_auth, f"Bearer {jwt.encode(claims(), rsa_key, 'RS256')}"))


def test_es256_token_when_configured_for_rs256_is_401(
    rs_auth: UserAuth, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """An ES256 token is refused by a server configured for RS256."""
    assert_invalid_token(rejected(rs_auth, f"Bearer {jwt.encode(claims(), ec_key, 'ES256')}"))


def test_expired_beyond_leeway_is_401(hs_auth: UserAuth) -> None:
    """A token expired longer ago than the leeway is 401 'token expired'."""
    error = rejected(hs_auth, f"Bearer {hs256(claims(expires_in=-LEEWAY_SECONDS - 10))}")
    assert_invalid_token(error)
    assert 'error_description="token expired"' in error.headers["WWW-Authenticate"]
    assert "expired" in error.message


def test_expired_within_leeway_passes(hs_auth: UserAuth) -> None:
    """A token expired less than the leeway ago still passes (clock skew)."""
    hs_auth.check(f"Bearer {hs256(claims(expires_in=-LEEWAY_SECONDS + 10))}", "alice")


def test_issued_in_the_future_beyond_leeway_is_401(hs_auth: UserAuth) -> None:
    """A token whose nbf is later than now plus the leeway is 401 'not yet valid'."""
    payload = claims(nbf=int(time.time()) + LEEWAY_SECONDS + 60, expires_in=600)
    error = rejected(hs_auth, f"Bearer {hs256(payload)}")
    assert_invalid_token(error)
    assert "not yet valid" in error.headers["WWW-Authenticate"]


@pytest.mark.parametrize("claim", ["exp", "sub"])
def test_missing_required_claim_is_401(hs_auth: UserAuth, claim: str) -> None:
    """A token without exp (it would never expire) or sub (it names no user) is refused."""
    payload = claims()
    del payload[claim]
    error = rejected(hs_auth, f"Bearer {hs256(payload)}")
    assert_invalid_token(error)
    assert f"lacks the {claim} claim" in error.headers["WWW-Authenticate"]


@pytest.mark.parametrize("sub", [42, "", ["alice"]])
def test_non_string_or_empty_sub_is_401(hs_auth: UserAuth, sub: Any) -> None:
    """A sub that is not a non-empty string is 401 invalid_token."""
    token = raw_token({"alg": "HS256"}, claims(sub), SECRET.encode())
    error = rejected(hs_auth, f"Bearer {token}")
    assert_invalid_token(error)
    assert "sub must be a non-empty string" in error.headers["WWW-Authenticate"]


def test_other_users_token_is_403(hs_auth: UserAuth) -> None:
    """A valid token for bob on alice's cart is 403, without a challenge."""
    error = rejected(hs_auth, f"Bearer {hs256(claims('bob'))}", "alice")
    assert error.status == 403
    assert error.headers == {}
    assert "another user" in error.message


def test_error_description_is_a_valid_rfc6750_value(hs_auth: UserAuth) -> None:
    """error_description holds only characters RFC 6750 allows (no quote or backslash)."""
    for header in ("Bearer x", f"Bearer {hs256(claims(expires_in=-3600))}"):
        challenge = rejected(hs_auth, header).headers["WWW-Authenticate"]
        description = challenge.split('error_description="', 1)[1].removesuffix('"')
        assert description
        assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)


def test_bad_key_files_raise_value_error(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A missing, non-PEM, private-key or empty file is a one-line ValueError."""
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = {
        tmp_path / "absent.pem": "cannot read",
        write(tmp_path, b"hello", "garbage.pem"): "not a PEM public key",
        write(tmp_path, b"", "empty.pem"): "not a PEM public key",
        write(tmp_path, private, "private.pem"): "private key",
        tmp_path: "cannot read",
    }
    for path, reason in cases.items():
        with pytest.raises(ValueError, match=reason) as caught:
            UserAuth.from_public_key_file(path)
        assert "\n" not in str(caught.value)


def test_other_key_types_raise_value_error(tmp_path: Path) -> None:
    """Ed25519, EC P-384 and short RSA keys are refused with what to pass instead."""
    cases = {
        "ed25519.pem": (ed25519.Ed25519PrivateKey.generate(), "RSA .RS256. or EC P-256 .ES256."),
        "p384.pem": (ec.generate_private_key(ec.SECP384R1()), "P-256"),
        "rsa1024.pem": (rsa.generate_private_key(65537, 1024), "at least 2048"),
    }
    for name, (key, reason) in cases.items():
        with pytest.raises(ValueError, match=reason):
            UserAuth.from_public_key_file(write(tmp_path, public_pem(key), name))


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "is 0 bytes"),
        ("s3cret", "is 6 bytes; HS256 needs at least 32"),
        ("ssh-ed25519 " + "A" * 68, "looks like a PEM or SSH key"),
    ],
)
def test_unusable_secrets_raise_value_error(secret: str, reason: str) -> None:
    """An empty, short (under 32 bytes) or key-looking secret is refused."""
    with pytest.raises(ValueError, match=reason):
        UserAuth.from_secret(secret)


def test_pem_secret_raises_value_error(rsa_key: rsa.RSAPrivateKey) -> None:
    """A PEM public key passed as the HS256 secret is refused, pointing at --auth-public-key."""
    with pytest.raises(ValueError, match="--auth-public-key"):
        UserAuth.from_secret(public_pem(rsa_key).decode())


def test_from_options(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """No option means auth off, one picks its kind, both is a ValueError."""
    key_file = write(tmp_path, public_pem(ec_key))
    assert UserAuth.from_options(secret=None, public_key_file=None) is None
    from_secret = UserAuth.from_options(secret=SECRET, public_key_file=None)
    assert from_secret == UserAuth.from_secret(SECRET)
    from_file = UserAuth.from_options(secret=None, public_key_file=key_file)
    assert from_file is not None
    assert from_file.algorithm == "ES256"
    with pytest.raises(ValueError, match="not both"):
        UserAuth.from_options(secret=SECRET, public_key_file=key_file)


def test_secret_stays_out_of_repr() -> None:
    """The repr of a UserAuth never shows the key."""
    assert SECRET not in repr(UserAuth.from_secret(SECRET))


def test_mismatched_key_and_algorithm_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """Direct construction refuses 'none' and a key that does not fit the algorithm."""
    with pytest.raises(ValueError, match="HS256, RS256 or ES256"):
        UserAuth(algorithm="none", key=SECRET)
    with pytest.raises(ValueError, match="does not fit"):
        UserAuth(algorithm="HS256", key=rsa_key.public_key())


def test_mint_token_round_trips(hs_auth: UserAuth) -> None:
    """mint_token makes an HS256 token that check accepts for that user and lasts ttl."""
    token = mint_token(SECRET, "alice", ttl_seconds=120)
    hs_auth.check(f"Bearer {token}", "alice")
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 120
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(ValueError):
        mint_token(SECRET, "alice", ttl_seconds=0)
    with pytest.raises(ValueError):
        mint_token("short", "alice")
