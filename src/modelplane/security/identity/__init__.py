"""Identities and credentials: passwords, TOTP, signed access tokens, API keys, device keys."""
