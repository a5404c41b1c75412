"""Certificates: checking a PEM pair, serving it, and renewing it without a restart.

Shared by the bridge (which terminates TLS itself when ``[voice.bridge] tls_cert`` is set),
the supervisor (which checks bridges on ``wss://`` against ``[dashboard] ca_file``),
``xswarm install --tls-cert`` (which copies the pair for HAProxy) and ``xswarm doctor``.
The standard library's ``ssl`` checks that a certificate parses and that the key belongs to
it; its expiry is read here from the certificate's DER (the two fields we need do not justify
a dependency on ``cryptography``).

A renewal swaps the pair inside the running ``SSLContext``: ``load_cert_chain`` on the same
object applies to every handshake after it, so the listening socket, and the calls already
connected, carry on untouched.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from xswarm.errors import XswarmError

# Certificates that expire sooner than this are worth a warning (doctor, the alert rules).
EXPIRY_WARNING_SECONDS = 14 * 86400
ALPN = ["http/1.1"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S
)


class TlsError(XswarmError):
    """A certificate or key that cannot be served; the message names the file and the fix."""


@dataclass(frozen=True)
class Certificate:
    """The first certificate of a PEM file: what an operator and the alerts need of it."""

    path: str
    serial: int
    not_after: float  # Unix seconds

    def seconds_left(self, now: float | None = None) -> float:
        return self.not_after - (time.time() if now is None else now)

    @property
    def expires(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.not_after))


@dataclass(frozen=True)
class PemPair:
    """Where a certificate chain and its key are; ``key`` None: both are in ``cert``."""

    cert: Path
    key: Path | None = None


def read_certificate(path: Path) -> Certificate:
    """Serial and notAfter of the first certificate in ``path``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read certificate {path}: {exc.strerror}") from None
    return certificate_from_pem(data, str(path))


def certificate_from_pem(data: bytes, where: str) -> Certificate:
    match = _PEM_CERTIFICATE.search(data)
    if match is None:
        raise TlsError(f"{where} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        der = base64.b64decode(match.group(1), validate=False)
        serial, not_after = _serial_and_not_after(der)
    except (binascii.Error, ValueError, IndexError) as exc:
        raise TlsError(f"{where}: the certificate does not parse ({exc})") from None
    return Certificate(where, serial, not_after)


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``at``."""
    tag = der[at]
    length = der[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, start, end


def _serial_and_not_after(der: bytes) -> tuple[int, float]:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber INTEGER, signature, issuer, validity SEQUENCE { notBefore, notAfter } ...}}"""
    _, cert_start, _ = _element(der, 0)
    _, at, _ = _element(der, cert_start)  # into tbsCertificate
    tag, start, end = _element(der, at)
    if tag == 0xA0:  # explicit version
        at = end
        tag, start, end = _element(der, at)
    if tag != 0x02:
        raise ValueError("no serial number")
    serial = int.from_bytes(der[start:end], "big", signed=True)
    at = end
    for _ in range(2):  # signature algorithm, issuer
        at = _element(der, at)[2]
    tag, validity, _ = _element(der, at)
    if tag != 0x30:
        raise ValueError("no validity")
    not_before_end = _element(der, validity)[2]
    tag, start, end = _element(der, not_before_end)
    return serial, _asn1_time(tag, der[start:end].decode("ascii"))


def _asn1_time(tag: int, text: str) -> float:
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not UTC")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ: years 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        raise ValueError("notAfter is not a time")
    parsed = time.strptime(text[:14], "%Y%m%d%H%M%S")
    return float(calendar.timegm(parsed))


def load_pair(context: ssl.SSLContext, pair: PemPair) -> Certificate:
    """Check ``pair`` and put it in ``context``; a bad pair raises and leaves ``context`` as
    it was (it is loaded into a scratch context first)."""
    certificate = check_pair(pair)
    context.load_cert_chain(pair.cert, pair.key)
    return certificate


def check_pair(pair: PemPair, now: float | None = None) -> Certificate:
    """The pair's certificate, once it parses, the key matches it and it has not expired."""
    certificate = read_certificate(pair.cert)
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    key_where = pair.key or pair.cert
    try:
        scratch.load_cert_chain(pair.cert, pair.key)
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename or key_where}: no such file") from None
    except PermissionError as exc:
        raise TlsError(
            f"cannot read {exc.filename or key_where}: permission denied; the service needs "
            "read access to the certificate and key"
        ) from None
    except ssl.SSLError as exc:
        raise TlsError(_pair_problem(pair, exc)) from None
    if certificate.seconds_left(now) <= 0:
        raise TlsError(
            f"certificate {pair.cert} expired on {certificate.expires}; renew it and point "
            "the config at the new files"
        )
    return certificate


def _pair_problem(pair: PemPair, exc: ssl.SSLError) -> str:
    reason = (exc.reason or str(exc)).lower().replace("_", " ")
    # EC key for an RSA certificate, or the reverse: OpenSSL says "no certificate assigned".
    if "key values mismatch" in reason or "no certificate assigned" in reason:
        return f"the key {pair.key or pair.cert} does not belong to the certificate {pair.cert}"
    if pair.key is None and "pem" in reason:
        return (
            f"{pair.cert} holds no private key; give the key file too (tls_key, --tls-key) "
            "or a combined PEM"
        )
    if "pem" in reason:
        return f"{pair.key} is not a PEM private key; give the key that goes with {pair.cert}"
    return f"cannot load certificate {pair.cert} with key {pair.key or pair.cert}: {reason}"


class ServerTls:
    """The bridge's TLS: one ``SSLContext`` for the life of the process, renewed in place."""

    def __init__(self, pair: PemPair) -> None:
        self.pair = pair
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(ALPN)
        self.certificate = load_pair(self.context, pair)

    def reload(self) -> Certificate:
        """Read the files again (a renewal); a bad pair raises and the served one stays."""
        self.certificate = load_pair(self.context, self.pair)
        return self.certificate


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """How the supervisor checks a bridge's certificate on ``wss://``: against ``ca_file`` (a
    PEM bundle: a private CA) when given, else the system's trust store. Hostname checking
    stays on (``PROTOCOL_TLS_CLIENT``): a certificate is good only for the names and
    addresses it lists. Built once and again on reload, not per connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    certificate = read_certificate(ca_file)
    if certificate.seconds_left() <= 0:
        raise TlsError(
            f"CA certificate {ca_file} expired on {certificate.expires}; put the CA that signs "
            "the bridges' current certificates there"
        )
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"{ca_file} is not a PEM bundle of CA certificates ({exc.reason or exc}); give the "
            "CA that signed the bridges' certificates"
        ) from None
    return context
