"""Throwaway certificates for the local secured services: a CA, a server and a client certificate.

``segstream services up --secure`` and the tests need TLS on loopback without anyone installing
a real PKI, so :func:`issue_local_certs` makes a fresh CA and signs, with it, a server
certificate for ``localhost`` and ``127.0.0.1`` (both in the subject alternative names, so host
name checking stays on) and a client certificate for mutual TLS. The CA's private key is never
written: once the two leaves are signed nobody can issue another certificate under this CA, so
trusting ``ca.pem`` trusts exactly these two. Everything is valid for a few days only; keys are
written mode 0600 in a directory made mode 0700.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_HOSTS", "LocalCerts", "issue_local_certs"]

#: The names a local service is reached by; both go into the server certificate.
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
VALID_DAYS = 3


@dataclass(frozen=True)
class LocalCerts:
    """Paths of the PEM files :func:`issue_local_certs` wrote (keys are unencrypted, mode 0600)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def issue_local_certs(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = VALID_DAYS,
    client_name: str = "segstream-local-client",
) -> LocalCerts:
    """A new CA and its server and client certificates in ``directory`` (overwriting old ones).

    ``hosts``: DNS names or IP addresses the server certificate is valid for. The files are
    ``ca.pem``, ``server.pem``, ``server.key``, ``client.pem``, ``client.key``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    # Backdated a little: a client whose clock lags by a minute must not see "not yet valid".
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"segstream local CA {now:%Y-%m-%d %H:%M:%S}")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _leaf(
        ca, ca_key, server_key, hosts[0] if hosts else "localhost", start, end,
        ExtendedKeyUsageOID.SERVER_AUTH, hosts,
    )  # fmt: skip
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _leaf(
        ca, ca_key, client_key, client_name, start, end, ExtendedKeyUsageOID.CLIENT_AUTH, ()
    )

    certs = LocalCerts(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    _write(certs.ca, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(certs.server_cert, server.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(certs.client_cert, client.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(certs.server_key, _key_pem(server_key), 0o600)
    _write(certs.client_key, _key_pem(client_key), 0o600)
    return certs


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    start: datetime.datetime,
    end: datetime.datetime,
    usage: x509.ObjectIdentifier,
    hosts: Sequence[str],
) -> x509.Certificate:
    builder = (
        _builder(_name(common_name), ca.subject, key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage with only the ``allowed`` bits set."""
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` with ``mode`` from the first byte on (no window where a key is readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
        out.write(data)
