from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.privacy.errors import KeyMismatch, MalformedMessage
from modelplane.privacy.paillier import FixedBaseObfuscators, ObfuscatorPool, PrivateKey, PublicKey

KEY = PrivateKey.generate(1024)
PUB = KEY.public
POOL = ObfuscatorPool(PUB)

small = st.integers(min_value=-(2**40), max_value=2**40)


@settings(max_examples=25, deadline=None)
@given(st.lists(small, min_size=1, max_size=5), st.lists(small, min_size=5, max_size=5))
def test_homomorphic_ops_match_plaintext(values: list[int], added: list[int]) -> None:
    cs = PUB.encrypt(values, POOL)
    assert KEY.decrypt(cs) == values
    assert KEY.decrypt(PUB.add_plain(cs, added[: len(values)])) == [a + b for a, b in zip(values, added, strict=False)]
    assert KEY.decrypt(PUB.rerandomize(cs, POOL)) == values


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(small, st.integers(-(2**30), 2**30), st.integers(-(2**30), 2**30)), min_size=1, max_size=6))
def test_dot_columns_is_the_encrypted_inner_product(rows: list[tuple[int, int, int]]) -> None:
    d = [r[0] for r in rows]
    columns = [[r[1] for r in rows], [r[2] for r in rows]]
    got = KEY.decrypt(PUB.dot_columns(PUB.encrypt(d, POOL), columns))
    assert got == [sum(a * b for a, b in zip(d, col, strict=True)) for col in columns]


def test_same_plaintext_encrypts_differently() -> None:
    a, b = PUB.encrypt([7, 7], POOL)
    assert a != b


def test_background_pool_fills_and_hands_out_valid_obfuscators() -> None:
    pool = ObfuscatorPool(PUB, target=4).start()
    try:
        assert KEY.decrypt(PUB.encrypt([1, -2, 3, -4, 5], pool)) == [1, -2, 3, -4, 5]
    finally:
        pool.stop()


@pytest.mark.parametrize(
    "bad", [[0], [PUB.nsquare], [True], ["12"], [1.5], "notalist"],
)
def test_non_ciphertexts_are_rejected_naming_the_sender(bad: object) -> None:
    with pytest.raises(MalformedMessage) as err:
        PUB.check_ciphertexts(bad, "host")
    assert err.value.field == "host"


def test_wrong_count_is_rejected() -> None:
    with pytest.raises(MalformedMessage, match="expected a list of 3"):
        PUB.check_ciphertexts([1, 2], "guest", count=3)


def test_key_mismatch_is_a_clear_error() -> None:
    with pytest.raises(KeyMismatch):
        KEY.check_matches(PublicKey(PUB.n + 2))


def test_public_key_message_round_trip_and_rejects_garbage() -> None:
    assert PublicKey.from_message(PUB.to_message(), "arbiter") == PUB
    with pytest.raises(MalformedMessage):
        PublicKey.from_message({"kind": "paillier_public_key", "n": 15}, "arbiter")


def test_fixed_base_obfuscators_are_distinct_encryptions_of_zero() -> None:
    gen = FixedBaseObfuscators(PUB)
    values = [int(gen.obfuscator()) for _ in range(5)]
    assert KEY.decrypt(values) == [0] * 5
    assert len(set(values)) == 5
