"""Signing keys and every JOSE call."""
