"""Codes that are not codes are refused, never an error."""

import pyotp
import pytest

from modelplane.security.identity.totp import verify_code

SECRET = pyotp.random_base32()


@pytest.mark.parametrize("junk", ["١٢٣٤٥٦", "12345é", "", "1234567", "abcdef", " 12 34 "])
def test_junk_codes_are_refused(junk):
    assert verify_code(SECRET, junk, 1_700_000_000.0) is None


def test_a_real_code_still_verifies():
    now = 1_700_000_000.0
    code = pyotp.TOTP(SECRET).at(now)
    assert verify_code(SECRET, code, now) is not None
