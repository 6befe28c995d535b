"""Certificates: a local CA, the server's TLS certificate and the fixture app's client certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class PkiFiles:
    """Paths of the PEM files a simulator serves and hands to clients."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    app_cert: Path
    app_key: Path
    # Key and certificate in one PEM, the form a tenant profile's certificate_path takes.
    app_bundle: Path

    @property
    def app_cert_pem(self) -> bytes:
        """The app certificate in PEM."""
        return self.app_cert.read_bytes()


def thumbprints(cert_pem: bytes) -> tuple[str, str]:
    """(SHA-1, SHA-256) thumbprints of a PEM certificate, upper-case hex as Entra shows them."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "graphsim"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _make_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("graphsim local CA"))
        .issuer_name(_name("graphsim local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_server_cert(ca_cert_path: Path, ca_key_path: Path, cert_path: Path, key_path: Path,
                      extra_hosts: tuple[str, ...] = ()) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("unexpected CA key type")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
            *(x509.DNSName(h) for h in extra_hosts),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_app_cert(cert_path: Path, key_path: Path) -> None:
    # RSA, because MSAL signs client assertions with RS256/PS256.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("bulk-license app"))
        .issuer_name(_name("bulk-license app"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(directory: Path, extra_hosts: tuple[str, ...] = ()) -> PkiFiles:
    """Create the CA, server and app certificates in `directory`, reusing any that already exist.

    `extra_hosts` are DNS names the server certificate must also cover (e.g. a compose service name).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = PkiFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                     directory / "app-cert.pem", directory / "app-key.pem", directory / "app-bundle.pem")
    ca_key = directory / "ca-key.pem"
    if not (files.ca_cert.is_file() and ca_key.is_file()):
        _make_ca(files.ca_cert, ca_key)
        files.server_cert.unlink(missing_ok=True)
    hosts_marker = directory / "server-hosts.txt"
    wanted = ",".join(sorted(extra_hosts))
    if hosts_marker.is_file() and hosts_marker.read_text() != wanted:
        files.server_cert.unlink(missing_ok=True)
    if not (files.server_cert.is_file() and files.server_key.is_file()):
        _make_server_cert(files.ca_cert, ca_key, files.server_cert, files.server_key, tuple(sorted(extra_hosts)))
        hosts_marker.write_text(wanted)
    if not (files.app_cert.is_file() and files.app_key.is_file()):
        _make_app_cert(files.app_cert, files.app_key)
    files.app_bundle.write_bytes(files.app_key.read_bytes() + files.app_cert.read_bytes())
    files.app_bundle.chmod(0o600)
    return files
