"""Throwaway certificates for TLS tests: a CA, a server certificate for 127.0.0.1 and
localhost signed by it, and a client certificate whose key is encrypted."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Certs:
    ca: Path                 # the CA certificate clients trust
    server_cert: Path        # CN=localhost, SANs localhost and 127.0.0.1
    server_key: Path         # unencrypted PKCS#8, as Kafka's PEM key store reads it
    client_cert: Path
    client_key: Path         # encrypted with client_key_password
    client_key_password: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signed(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
            sans: list[x509.GeneralName] | None = None,
            usage: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                        critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_certs(folder: Path, ca_name: str = "streamrec test CA") -> Certs:
    """Write a fresh CA, server and client certificate into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _signed(ca_name, ca_key, _name(ca_name), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _signed("localhost", server_key, ca.subject, ca_key,
                     sans=[x509.DNSName("localhost"),
                           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                     usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _signed("streamrec-client", client_key, ca.subject, ca_key,
                     usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    password = "client-key-secret"
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                  folder / "client.pem", folder / "client.key", password)
    certs.ca.write_bytes(ca.public_bytes(PEM))
    certs.server_cert.write_bytes(server.public_bytes(PEM))
    certs.server_key.write_bytes(server_key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certs.client_cert.write_bytes(client.public_bytes(PEM))
    certs.client_key.write_bytes(client_key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode())))
    return certs
