"""SSH key material: what nova generates for a keypair, and host keys."""

from __future__ import annotations

import base64
import hashlib

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_rsa_keypair(comment: str = "Generated-by-Nova"
                         ) -> tuple[str, str]:
    """Return ``(private_pem, public_openssh)`` like nova's keypair API.

    The private key is PEM ``BEGIN RSA PRIVATE KEY``: paramiko's
    ``RSAKey.from_private_key`` (what rally's sshutils tries first) reads it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH,
        serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def parse_public_key(text: str) -> tuple[str, bytes]:
    """Return ``(key_type, blob)`` of an OpenSSH public key line.

    :raises ValueError: if the text is not a public key.
    """
    parts = text.strip().split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as e:
        raise ValueError(f"bad key data: {e}") from None
    # the blob starts with the length-prefixed key type: check it matches
    try:
        msg = paramiko.Message(blob)
        if msg.get_text() != parts[0]:
            raise ValueError("key type mismatch")
    except Exception as e:  # paramiko raises assorted errors on garbage
        raise ValueError(f"bad key data: {e}") from None
    return parts[0], blob


def fingerprint(public_key: str) -> str:
    """Nova's (legacy MD5) fingerprint ``aa:bb:...``."""
    _, blob = parse_public_key(public_key)
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate_host_key() -> paramiko.PKey:
    """A fresh host key for the guests' SSH servers (fast to generate)."""
    return paramiko.ECDSAKey.generate()
