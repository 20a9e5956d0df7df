"""SCRAM-SHA-256 and its channel-bound ``-PLUS`` (RFC 5802, 7677, 5929), as PostgreSQL speaks it.

Both ends, for :mod:`neon_local.neon_proxy`: the server end it shows clients and the client end
it logs in to the stand-in with. Written here, not taken from ``scramp``: PostgreSQL's clients
send an empty SCRAM user name (the startup packet names the user), which ``scramp`` refuses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
from dataclasses import dataclass, field

SCRAM = "SCRAM-SHA-256"
SCRAM_PLUS = "SCRAM-SHA-256-PLUS"
ITERATIONS = 4096  # PostgreSQL's scram_iterations default
_BINDING = "tls-server-end-point"


class ScramError(Exception):
    """The client's messages do not prove it knows the password (or are malformed)."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _attributes(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


def server_end_point(certificate_pem: str) -> bytes:
    """``tls-server-end-point`` data: the certificate's hash, SHA-256 for the stand-in's
    (RFC 5929 uses the signature's hash, and SHA-256 in place of MD5 or SHA-1)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate_pem)).digest()


@dataclass(frozen=True)
class Verifier:
    """What a server stores for a password (PostgreSQL's ``rolpassword``, in parts)."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)  # password-equivalent to an attacker: never printed
    server_key: bytes = field(repr=False)

    @classmethod
    def of(cls, password: str) -> Verifier:
        salt = secrets.token_bytes(16)
        salted = _salted(password, salt, ITERATIONS)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt, ITERATIONS, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )


class ServerExchange:
    """One client's exchange: :meth:`first` answers ``client-first``, :meth:`final` checks
    ``client-final`` and returns ``server-final``."""

    def __init__(self, verifier: Verifier, *, mechanism: str, binding_data: bytes | None) -> None:
        self._verifier = verifier
        self._mechanism = mechanism
        self._binding_data = binding_data  # None: this server offered no channel binding
        self._header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def first(self, client_first: str) -> str:
        flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        if self._mechanism == SCRAM_PLUS:
            if flag != f"p={_BINDING}":
                raise ScramError(f"{SCRAM_PLUS} needs the {_BINDING} channel binding")
        elif flag == "y" and self._binding_data is not None:
            raise ScramError("the client could bind the channel but was told it could not")
        elif flag not in ("n", "y"):
            raise ScramError("channel binding outside the -PLUS mechanism")
        nonce = _attributes(bare).get("r")
        if not nonce:
            raise ScramError("client-first has no nonce")
        self._header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = nonce + _b64(secrets.token_bytes(18))
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        without_proof, _, proof_part = client_final.rpartition(",p=")
        attributes = _attributes(without_proof)
        expected = self._header.encode()
        if self._mechanism == SCRAM_PLUS:
            expected += self._binding_data or b""
        if attributes.get("c") != _b64(expected):
            raise ScramError("the channel binding does not match this TLS connection")
        if attributes.get("r") != self._nonce:
            raise ScramError("client-final's nonce is not this exchange's")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as error:
            raise ScramError("client-final's proof is not base64") from error
        signature = _hmac(self._verifier.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if len(proof) != len(signature) or not hmac.compare_digest(
            hashlib.sha256(client_key).digest(), self._verifier.stored_key
        ):
            raise ScramError("wrong password")
        return f"v={_b64(_hmac(self._verifier.server_key, auth_message))}"


class ClientExchange:
    """The client end, without channel binding (``n,,``), as the proxy logs in upstream."""

    def __init__(self, password: str) -> None:
        self._password = password
        self._bare = f"n=,r={_b64(secrets.token_bytes(18))}"
        self._server_signature = b""

    def first(self) -> str:
        return f"n,,{self._bare}"

    def final(self, server_first: str) -> str:
        attributes = _attributes(server_first)
        salted = _salted(self._password, base64.b64decode(attributes["s"]), int(attributes["i"]))
        without_proof = f"c=biws,r={attributes['r']}"
        auth_message = f"{self._bare},{server_first},{without_proof}".encode()
        client_key = _hmac(salted, b"Client Key")
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}"

    def check(self, server_final: str) -> None:
        if _attributes(server_final).get("v") != _b64(self._server_signature):
            raise ScramError("the server's signature is wrong")
