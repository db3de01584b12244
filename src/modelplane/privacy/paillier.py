"""Paillier on raw integers with gmpy2: fixed-point encoding, batched homomorphic ops, obfuscator pool.

``phe`` generates keys and decrypts (CRT); the per-sample hot loops (encrypt, plaintext add,
ciphertext-vector dot products) run directly on gmpy2 integers because phe's per-object
EncryptedNumber bookkeeping dominates at these sizes. Obfuscators r^n mod n^2 do not depend on the
data, so an ``ObfuscatorPool`` precomputes them while the party waits on the network.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.privacy.errors import KeyMismatch, MalformedMessage, require

FRAC_BITS = 24
"""Fixed-point scale 2^FRAC_BITS for real values before encryption."""

FEATURE_FRAC_BITS = 16
"""Scale of plaintext feature values used as exponents: short exponents keep X^T [[d]] cheap."""


def _gmpy() -> Any:
    return require("gmpy2")


def encode(value: float, frac_bits: int = FRAC_BITS) -> int:
    """Signed fixed-point integer for a real value."""
    return round(value * (1 << frac_bits))


@dataclass(frozen=True)
class PublicKey:
    """The arbiter's Paillier public key; g = n + 1 so g^m = 1 + m n (mod n^2)."""

    n: int

    @property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    def to_message(self) -> dict[str, Any]:
        return {"kind": "paillier_public_key", "n": self.n}

    @staticmethod
    def from_message(message: dict[str, Any], sender: str) -> PublicKey:
        n = message.get("n")
        if message.get("kind") != "paillier_public_key" or not isinstance(n, int) or n < (1 << 511):
            raise MalformedMessage(f"{sender} sent no valid Paillier public key", field=sender)
        return PublicKey(n)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")).hexdigest()[:16]

    def plain(self, m: int) -> int:
        """g^m mod n^2 for a signed integer m: the unobfuscated encryption of m."""
        return (1 + (m % self.n) * self.n) % self.nsquare

    def encrypt(self, values: Sequence[int], pool: ObfuscatorPool) -> list[int]:
        """Encrypt signed integers, each with a fresh obfuscator from ``pool``."""
        gmpy2 = _gmpy()
        nsq = gmpy2.mpz(self.nsquare)
        rs = pool.take(len(values))
        return [int(gmpy2.f_mod(gmpy2.mpz(self.plain(m)) * r, nsq)) for m, r in zip(values, rs, strict=True)]

    def add_plain(self, ciphertexts: Sequence[int], values: Sequence[int]) -> list[int]:
        """[[a]] * g^b = [[a + b]] elementwise (not re-randomized)."""
        nsq = self.nsquare
        return [c * self.plain(m) % nsq for c, m in zip(ciphertexts, values, strict=True)]

    def rerandomize(self, ciphertexts: Sequence[int], pool: ObfuscatorPool) -> list[int]:
        nsq = self.nsquare
        return [int(c * r % nsq) for c, r in zip(ciphertexts, pool.take(len(ciphertexts)), strict=True)]

    def dot_columns(self, ciphertexts: Sequence[int], columns: Sequence[Sequence[int]]) -> list[int]:
        """For each integer column x: [[sum_i x_i * d_i]] = prod_i [[d_i]]^x_i.

        A bucket (Pippenger) multi-exponentiation per column: per window of bits, ciphertexts are
        multiplied into the bucket of their digit and the buckets combined with a running product,
        about (bits/window) * (rows + 2^(window+1)) multiplications instead of rows * 1.5 * bits.
        Negative weights go to a second product that is inverted once per column.
        """
        gmpy2 = _gmpy()
        nsq = gmpy2.mpz(self.nsquare)
        cs = [gmpy2.mpz(c) for c in ciphertexts]
        out = []
        for column in columns:
            if len(column) != len(cs):
                raise ValueError("every column needs one weight per ciphertext")
            pos = [(c, x) for c, x in zip(cs, column, strict=True) if x > 0]
            neg = [(c, -x) for c, x in zip(cs, column, strict=True) if x < 0]
            value = _multi_exp(pos, nsq) * gmpy2.invert(_multi_exp(neg, nsq), nsq) % nsq
            out.append(int(value))
        return out

    def check_ciphertexts(self, values: Any, sender: str, *, count: int | None = None) -> list[int]:
        """Reject anything that is not a list of integers in (0, n^2) of the expected length."""
        nsq = self.nsquare
        if not isinstance(values, list) or (count is not None and len(values) != count):
            raise MalformedMessage(
                f"{sender} sent {type(values).__name__} of length {len(values) if isinstance(values, list) else '?'}"
                f", expected a list of {count} ciphertexts",
                field=sender,
            )
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < nsq:
                raise MalformedMessage(f"{sender} sent a value that is not a ciphertext under our key", field=sender)
        return values


def _multi_exp(terms: list[tuple[Any, int]], modulus: Any, window: int = 5) -> Any:
    """prod c^e mod ``modulus`` for non-negative e, by the bucket method."""
    gmpy2 = _gmpy()
    one = gmpy2.mpz(1)
    if not terms:
        return one
    bits = max(e for _, e in terms).bit_length()
    mask = (1 << window) - 1
    result = one
    for shift in range(((bits + window - 1) // window - 1) * window, -1, -window):
        for _ in range(window):
            result = result * result % modulus
        buckets = [one] * (mask + 1)
        for c, e in terms:
            digit = (e >> shift) & mask
            if digit:
                buckets[digit] = buckets[digit] * c % modulus
        running, window_product = one, one
        for digit in range(mask, 0, -1):  # window_product = prod_d buckets[d]^d
            running = running * buckets[digit] % modulus
            window_product = window_product * running % modulus
        result = result * window_product % modulus
    return result


class PrivateKey:
    """The arbiter's key: decrypts to signed integers."""

    def __init__(self, public: PublicKey, phe_private: Any):
        self.public = public
        self._key = phe_private

    @staticmethod
    def generate(bits: int = 1024) -> PrivateKey:
        phe: Any = require("phe")
        pub, priv = phe.paillier.generate_paillier_keypair(n_length=bits)
        return PrivateKey(PublicKey(pub.n), priv)

    def decrypt(self, ciphertexts: Sequence[int]) -> list[int]:
        n = self.public.n
        half = n // 2
        out = []
        for c in ciphertexts:
            m = self._key.raw_decrypt(c)
            out.append(m - n if m > half else m)
        return out

    def check_matches(self, public: PublicKey) -> None:
        if public.n != self.public.n:
            raise KeyMismatch("the Paillier public key does not belong to this private key",
                              hint="all parties must use the public key the arbiter sent")


class FixedBaseObfuscators:
    """Obfuscators h_s^a mod n^2 (Damgard-Jurik-Nielsen) instead of r^n, from a fixed-base table.

    h_s = y^n for a random y is one random n-th residue; a in [0, 2^(|n|/2)) as in DJN's variant
    of Paillier. With a table of h_s^(d * 2^(8i)) each obfuscator is |n|/16 multiplications
    instead of a full |n|-bit exponentiation (measured 10-13x faster here).
    """

    WINDOW = 8

    def __init__(self, public: PublicKey):
        gmpy2 = _gmpy()
        self.nsquare = gmpy2.mpz(public.nsquare)
        self.exponent_bits = public.n.bit_length() // 2
        y = gmpy2.mpz(secrets.randbelow(public.n - 2) + 1)
        base = gmpy2.powmod(y, public.n, self.nsquare)
        self.table: list[list[Any]] = []
        for _ in range((self.exponent_bits + self.WINDOW - 1) // self.WINDOW):
            row = [gmpy2.mpz(1)]
            for _ in range((1 << self.WINDOW) - 1):
                row.append(row[-1] * base % self.nsquare)
            self.table.append(row)
            base = row[-1] * base % self.nsquare

    def obfuscator(self) -> Any:
        a = secrets.randbits(self.exponent_bits)
        acc = self.table[0][a & 0xFF]
        for row in self.table[1:]:
            a >>= self.WINDOW
            acc = acc * row[a & 0xFF] % self.nsquare
        return acc


class ObfuscatorPool:
    """Precomputed obfuscators; a daemon thread refills the pool while the party is idle."""

    def __init__(self, public: PublicKey, *, target: int = 0):
        self.public = public
        self.target = target
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fixed_base = FixedBaseObfuscators(public)

    def _one(self) -> Any:
        return self._fixed_base.obfuscator()

    def start(self) -> ObfuscatorPool:
        """Begin refilling in the background up to ``target`` items."""
        if self.target > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._fill, daemon=True, name="paillier-obfuscators")
            self._thread.start()
        return self

    def _fill(self) -> None:
        import time

        while not self._stop.is_set():
            with self._lock:
                full = len(self._items) >= self.target
            if full:
                time.sleep(0.01)
                continue
            item = self._one()
            with self._lock:
                self._items.append(item)

    def take(self, count: int) -> list[Any]:
        with self._lock:
            got = self._items[:count]
            del self._items[:count]
        got.extend(self._one() for _ in range(count - len(got)))
        return got

    def stop(self) -> None:
        self._stop.set()
