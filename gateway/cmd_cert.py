"""``telacd cert DIR``: a self-signed certificate and key for the QUIC listener (development).

QUIC always runs TLS 1.3 (RFC 9001), so a QUIC listener needs a certificate
even on a test bench. This writes ``DIR/cert.pem`` and ``DIR/key.pem``: an
ECDSA P-256 key (small handshakes: on a cellular uplink every byte of the
first flight counts, and aioquic signs P-256 fast) and a certificate naming
``localhost``, 127.0.0.1, ::1 and whatever ``--name``/``--ip`` add, so a
terminal that verifies the server name accepts it when given the certificate
as its trust anchor. Production gateways use a certificate from the operator's
CA; the configuration takes any PEM pair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory to write cert.pem and key.pem into")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="DNS",
        help="DNS name the certificate is for (repeatable; localhost is always included)",
    )
    parser.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="IP address the certificate is for (repeatable; 127.0.0.1 and ::1 are always included)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing cert.pem/key.pem")


def make_self_signed(
    names: list[str] | tuple[str, ...] = (), ips: list[str] | tuple[str, ...] = (), days: int = 365
) -> tuple[bytes, bytes]:
    """A (certificate PEM, PKCS#8 key PEM) pair for ``localhost`` plus ``names`` and ``ips``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns = list(dict.fromkeys(["localhost", *names]))
    addrs = list(dict.fromkeys(ipaddress.ip_address(a) for a in ["127.0.0.1", "::1", *ips]))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[-1] if names else "telacd development")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a vehicle clock slightly behind
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns] + [x509.IPAddress(a) for a in addrs]),
            critical=False,
        )
        # a self-signed certificate is its own trust anchor: the client loads it as a CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def write_pair(
    directory: str | Path, *, names=(), ips=(), days: int = 365, force: bool = False
) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (mode 0600) into ``directory``; returns their paths."""
    d = Path(directory)
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    if not force and (cert_path.exists() or key_path.exists()):
        raise FileExistsError(f"{cert_path} or {key_path} exists (--force overwrites)")
    cert_pem, key_pem = make_self_signed(list(names), list(ips), days)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)  # an existing file keeps its old mode through O_TRUNC
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def main(args: argparse.Namespace) -> int:
    if args.days < 1:
        print("telacd cert: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        cert_path, key_path = write_pair(
            args.dir, names=args.name, ips=args.ip, days=args.days, force=args.force
        )
    except ValueError as e:  # a malformed --ip
        print(f"telacd cert: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"telacd cert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cert_path} and {key_path} (self-signed, {args.days} days)")
    print("add to the configuration:")
    print("  [gateway]")
    print('  quic = "0.0.0.0:6809"')
    print(f'  quic_cert = "{cert_path.resolve()}"')
    print(f'  quic_key = "{key_path.resolve()}"')
    return 0
