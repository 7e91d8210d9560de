"""Users' passwords: a slow hash to check them, and a sealed copy for Subsonic's token sign-in.

Subsonic apps sign in with a name and a password. `p` (the password itself) is checked against
a scrypt hash. `t` + `s` (md5 of the password and a salt the app chose) can only be checked by
whoever knows the password, so a sealed copy is kept too: encrypted and authenticated with a key
derived from a secret of the node (in a cluster, from the cluster secret, so every node can check
it). Whoever holds that secret and the catalog can read the passwords: the docs say so, and an
operator may turn token sign-in off (then only the hash is needed).

The seal uses the standard library only: a SHAKE-256 keystream of (key, random nonce) XORed with
the password, then HMAC-SHA256 over nonce and ciphertext (encrypt-then-MAC), with separate keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB and some tens of milliseconds per check
MAX_PASSWORD = 256


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str | None) -> bool:
    """Whether `password` is the one `stored` (a hash_password string) was made from."""
    try:
        kind, n, r, p, salt, digest = (stored or "").split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(digest) // 2)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(found.hex(), digest)


def seal_key(secret: bytes | str) -> bytes:
    """The key passwords are sealed with, from a node's (or the cluster's) secret."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, b"streamer: sealed passwords, v1", hashlib.sha256).digest()


def seal(key: bytes, password: str) -> str:
    nonce = secrets.token_bytes(16)
    plain = password.encode()
    cipher = bytes(a ^ b for a, b in zip(plain, _keystream(key, nonce, len(plain)), strict=True))
    return "s1$" + base64.urlsafe_b64encode(nonce + cipher + _tag(key, nonce + cipher)).decode()


def unseal(key: bytes, sealed: str | None) -> str | None:
    """The password, or None when `sealed` is missing, damaged or sealed with another key."""
    if not sealed or not sealed.startswith("s1$"):
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed[3:])
    except ValueError:
        return None
    nonce, cipher, tag = raw[:16], raw[16:-32], raw[-32:]
    if len(raw) < 48 or not hmac.compare_digest(tag, _tag(key, nonce + cipher)):
        return None
    plain = bytes(a ^ b for a, b in zip(cipher, _keystream(key, nonce, len(cipher)), strict=True))
    try:
        return plain.decode()
    except UnicodeDecodeError:
        return None


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    return hashlib.shake_256(b"encrypt\0" + key + nonce).digest(length)


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(hashlib.sha256(b"authenticate\0" + key).digest(), data, hashlib.sha256).digest()
