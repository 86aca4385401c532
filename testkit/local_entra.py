"""A local stand-in for Entra ID: a self-signed certificate for HTTPS Azurite, and bearer tokens.

Azurite's `--oauth basic` checks a token's issuer, audience and lifetime, not its signature, so
these tokens are real to it: an expired one, or one for another audience, is refused.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import time
from pathlib import Path

from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "azurite-cert.pem", directory / "azurite-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _segment(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class LocalEntraCredential:
    """An async token credential, as DefaultAzureCredential is, issuing `lifetime`-second tokens."""

    def __init__(self, lifetime: int = 3600, audience: str = "https://storage.azure.com") -> None:
        self.lifetime = lifetime
        self.audience = audience
        self.issued = 0

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        now = int(time.time())
        claims = {
            "aud": self.audience, "iss": f"https://sts.windows.net/{TENANT}/", "iat": now, "nbf": now - 60,
            "exp": now + self.lifetime, "oid": "00000000-0000-0000-0000-000000000001", "tid": TENANT,
        }  # fmt: skip
        self.issued += 1
        return AccessToken(f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}.", now + self.lifetime)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> LocalEntraCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None
