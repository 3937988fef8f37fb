"""HTTPS: `jwtapi serve --certfile --keyfile` with a self-signed certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import LiveServer, make_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A P-256 key and a certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwtapi test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("https")
    cert, key = self_signed_certificate(workdir)
    server = make_server(workdir)
    server.extra_args = ["--certfile", str(cert), "--keyfile", str(key)]
    server.scheme = "https"
    server.verify = str(cert)
    server.start()
    yield server
    server.stop()


def test_login_and_protected_over_tls(tls_server: LiveServer) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    tokens = tls_server.login()
    response = tls_server.get("/protected", tokens["access_token"])
    assert response.status_code == 200
    assert response.json()["sub"] == "alice"


def test_the_certificate_is_the_one_we_made(tls_server: LiveServer) -> None:
    served = ssl.get_server_certificate(("127.0.0.1", tls_server.port))
    assert served.strip() == Path(str(tls_server.verify)).read_text().strip()


def test_plain_http_to_the_tls_port_gets_no_token(tls_server: LiveServer) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://127.0.0.1:{tls_server.port}/login", timeout=10)


def test_an_untrusted_certificate_is_refused_by_a_verifying_client(
    tls_server: LiveServer,
) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_server.url}/health", timeout=10)  # system CAs only
