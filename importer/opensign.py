"""The Open API's ``access-sign`` (shared/api-contract.md, "Read-back: the Open API").

access-sign = the current time in milliseconds as a decimal string, encrypted with
AES/ECB/PKCS5Padding using the UTF-8 bytes of the accessKeySecret as the key (16, 24 or 32
bytes: AES-128/192/256), Base64-encoded, then URL-encoded. The platform accepts it for 5 minutes.

``make_sign`` is the client's half, ``read_sign`` the sandbox's. A bottom module: it imports
nothing of the package. AES comes from ``cryptography`` (never hand-rolled).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["KEY_SIZES", "SIGN_VALID_S", "key_problem", "make_sign", "read_sign", "sign_fresh"]

#: how long the platform accepts an access-sign (5 minutes, either way of the server's clock)
SIGN_VALID_S = 300
#: the accessKeySecret lengths AES takes, in bytes
KEY_SIZES = (16, 24, 32)


def key_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be an AES key (None: it can). Never quotes the secret."""
    size = len(secret.encode("utf-8"))
    if size not in KEY_SIZES:
        return f"must be 16, 24 or 32 bytes long (an AES key), it is {size} bytes"
    return None


def make_sign(secret: str, ms: int) -> str:
    """The ``access-sign`` header value for the time ``ms`` (milliseconds since the epoch)."""
    problem = key_problem(secret)
    if problem is not None:
        raise ValueError(f"the accessKeySecret {problem}")
    padder = padding.PKCS7(128).padder()  # PKCS5 padding is PKCS7 on 8..16-byte blocks
    data = padder.update(str(int(ms)).encode("ascii")) + padder.finalize()
    enc = Cipher(algorithms.AES(secret.encode("utf-8")), modes.ECB()).encryptor()
    raw = enc.update(data) + enc.finalize()
    return quote(base64.b64encode(raw).decode("ascii"), safe="")


def read_sign(secret: str, sign: str) -> int | None:
    """The milliseconds an ``access-sign`` carries, or None when it is not one made with
    ``secret`` (not URL/Base64 text, wrong length, bad padding, not a decimal number)."""
    if key_problem(secret) is not None:
        return None
    try:
        raw = base64.b64decode(unquote(sign).encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if not raw or len(raw) % 16:
        return None
    dec = Cipher(algorithms.AES(secret.encode("utf-8")), modes.ECB()).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(dec.update(raw) + dec.finalize()) + unpadder.finalize()
        text = plain.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not text.isdigit() or len(text) > 16:
        return None
    return int(text)


def sign_fresh(ms: int, now_ms: int, valid_s: float = SIGN_VALID_S) -> bool:
    """Whether a sign made at ``ms`` is still (or already) valid at ``now_ms``."""
    return abs(now_ms - ms) <= valid_s * 1000
