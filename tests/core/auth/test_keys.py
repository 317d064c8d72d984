from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk

from airflow_provider_backendauth.core.auth.keys import (
    check_algorithm,
    compatible_algorithms,
    load_signing_key,
    load_signing_key_file,
)
from airflow_provider_backendauth.core.errors import ConfigurationError, KeyLoadError
from tests.support.keyfactory import ec_key, pem, private_jwk, rsa_key


def same_key(loaded, original) -> bool:
    return loaded.key.private_numbers() == original.private_numbers()


@pytest.mark.parametrize("fmt", ["pkcs8", "pkcs1"])
def test_rsa_pem_formats(fmt):
    key = load_signing_key(pem(rsa_key(), fmt))
    assert same_key(key, rsa_key())
    assert key.kty == "RSA"


@pytest.mark.parametrize("fmt", ["pkcs8", "pkcs1"])  # pkcs1 for EC is SEC1 "EC PRIVATE KEY"
def test_ec_pem_formats(fmt):
    text = pem(ec_key("P-256"), fmt)
    if fmt == "pkcs1":
        assert "BEGIN EC PRIVATE KEY" in text
    key = load_signing_key(text)
    assert same_key(key, ec_key("P-256"))
    assert key.curve == "secp256r1"


@pytest.mark.parametrize("fmt", ["pkcs8", "pkcs1"])
def test_encrypted_pem_with_passphrase(fmt):
    text = pem(rsa_key(), fmt, passphrase=b"s3cret")
    assert "ENCRYPTED" in text
    assert same_key(load_signing_key(text, passphrase="s3cret"), rsa_key())


def test_encrypted_pem_without_passphrase_says_so():
    with pytest.raises(KeyLoadError, match="encrypted.*private_key_passphrase"):
        load_signing_key(pem(rsa_key(), passphrase=b"s3cret"))


def test_encrypted_pem_wrong_passphrase_says_so():
    with pytest.raises(KeyLoadError, match="passphrase is wrong"):
        load_signing_key(pem(rsa_key(), passphrase=b"s3cret"), passphrase="nope")


def test_passphrase_for_plain_key_says_so():
    with pytest.raises(KeyLoadError, match="not encrypted"):
        load_signing_key(pem(rsa_key()), passphrase="unneeded")


@pytest.mark.parametrize(
    "flatten",
    [
        lambda t: t.replace("\n", " "),
        lambda t: t.replace("\n", "\\n"),
        lambda t: t.replace("\n", "\\r\\n"),
        lambda t: '"' + t.replace("\n", "\\n") + '"',
        lambda t: t.replace("\n", "\r\n"),
    ],
    ids=["spaces", "literal-n", "literal-rn", "quoted", "crlf"],
)
def test_flattened_pem(flatten):
    assert same_key(load_signing_key(flatten(pem(rsa_key()))), rsa_key())


def test_flattened_legacy_encrypted_pem_keeps_its_headers():
    text = pem(rsa_key(), "pkcs1", passphrase=b"pw")
    assert "Proc-Type" in text
    loaded = load_signing_key(text.replace("\n", " "), passphrase="pw")
    assert same_key(loaded, rsa_key())


def test_rsa_jwk_with_kid_and_alg():
    data = private_jwk(rsa_key(), kid="k1", alg="RS512")
    key = load_signing_key(json.dumps(data))
    assert same_key(key, rsa_key())
    assert (key.kid, key.named_alg) == ("k1", "RS512")


def test_ec_jwk():
    key = load_signing_key(json.dumps(private_jwk(ec_key("P-384"), kid="e1")))
    assert same_key(key, ec_key("P-384"))
    assert key.kid == "e1"


def test_jwks_picks_by_kid():
    jwks = {"keys": [private_jwk(rsa_key(), kid="a"), private_jwk(ec_key("P-384"), kid="b")]}
    assert load_signing_key(json.dumps(jwks), kid="b").kid == "b"
    assert load_signing_key(json.dumps(jwks), kid="a").kty == "RSA"


def test_jwks_with_one_private_key_needs_no_kid():
    public = json.loads(jwk.JWK.from_pem(pem(ec_key("P-256")).encode()).export_public())
    jwks = {"keys": [public, private_jwk(rsa_key(), kid="only")]}
    assert load_signing_key(json.dumps(jwks)).kid == "only"


def test_jwks_with_several_keys_needs_kid():
    jwks = {"keys": [private_jwk(rsa_key(), kid="a"), private_jwk(ec_key("P-384"), kid="b")]}
    with pytest.raises(KeyLoadError, match="key_id"):
        load_signing_key(json.dumps(jwks))
    with pytest.raises(KeyLoadError, match="no private signing key with kid 'zzz'"):
        load_signing_key(json.dumps(jwks), kid="zzz")


def test_public_material_is_refused_with_a_hint():
    public_jwk = json.loads(jwk.JWK.from_pem(pem(rsa_key()).encode()).export_public())
    with pytest.raises(KeyLoadError, match="public key"):
        load_signing_key(json.dumps(public_jwk))
    with pytest.raises(KeyLoadError, match="public JWKS"):
        load_signing_key(json.dumps({"keys": [public_jwk]}))
    public_pem = jwk.JWK.from_pem(pem(rsa_key()).encode()).export_to_pem().decode()
    with pytest.raises(KeyLoadError, match="public half"):
        load_signing_key(public_pem)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "No private key"),
        ("not a key at all", "neither PEM"),
        ("{not json", "does not parse"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not a valid"),
        ('{"kty": "oct", "k": "abc", "d": "x"}', "not supported"),
    ],
)
def test_garbage_is_explained(text, message):
    with pytest.raises(KeyLoadError, match=message):
        load_signing_key(text)


def test_small_rsa_key_is_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyLoadError, match="at least 2048"):
        load_signing_key(pem(small))


def test_key_file(tmp_path):
    path = tmp_path / "key.pem"
    path.write_text(pem(ec_key("P-521")))
    assert load_signing_key_file(str(path)).curve == "secp521r1"
    with pytest.raises(KeyLoadError, match="Cannot read the private key file"):
        load_signing_key_file(str(tmp_path / "missing.pem"))


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_algorithms_fit_rsa(alg):
    assert check_algorithm(alg.lower(), load_signing_key(pem(rsa_key()))) == alg


@pytest.mark.parametrize(
    ("alg", "curve"), [("ES256", "P-256"), ("ES384", "P-384"), ("ES512", "P-521")]
)
def test_ec_algorithms_need_their_curve(alg, curve):
    key = load_signing_key(pem(ec_key(curve)))
    assert check_algorithm(alg, key) == alg
    other = next(c for c in ("P-256", "P-384") if c != curve)
    with pytest.raises(KeyLoadError, match=f"needs an EC {curve} key"):
        check_algorithm(alg, load_signing_key(pem(ec_key(other))))


def test_mismatched_families_are_refused():
    with pytest.raises(
        KeyLoadError, match="ES384 needs an EC P-384 key, but the configured key is an RSA"
    ):
        check_algorithm("ES384", load_signing_key(pem(rsa_key())))
    with pytest.raises(KeyLoadError, match="RS256 needs an RSA key.*Use ES384"):
        check_algorithm("RS256", load_signing_key(pem(ec_key("P-384"))))


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "hs512", ""])
def test_none_and_hmac_are_refused(alg):
    with pytest.raises(ConfigurationError, match="refused"):
        check_algorithm(alg, load_signing_key(pem(rsa_key())))


def test_unknown_algorithm():
    with pytest.raises(ConfigurationError, match="Unknown signing algorithm 'EdDSA'"):
        check_algorithm("EdDSA", load_signing_key(pem(rsa_key())))


def test_compatible_algorithms_keeps_order():
    key = load_signing_key(pem(ec_key("P-384")))
    assert compatible_algorithms(key, ("RS384", "ES256", "ES384")) == ("ES384",)


def test_thumbprint_matches_jwcrypto():
    for original in (rsa_key(), ec_key("P-256"), ec_key("P-521")):
        key = load_signing_key(pem(original))
        expected = jwk.JWK.from_pem(pem(original).encode()).thumbprint()
        assert key.thumbprint() == expected


def test_public_jwks_verifies_with_jwcrypto():
    key = load_signing_key(pem(ec_key("P-384")))
    jwks = key.public_jwks(alg="ES384")
    imported = jwk.JWKSet.from_json(json.dumps(jwks))
    assert imported.get_key(key.thumbprint()) is not None
    assert isinstance(key.key, ec.EllipticCurvePrivateKey)


def test_repr_never_shows_key_material():
    key = load_signing_key(pem(rsa_key()))
    assert "PRIVATE" not in repr(key) and "RSAPrivateKey" not in repr(key)
