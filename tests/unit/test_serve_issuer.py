"""``serve``'s issuer: it follows the address served unless AUTHSERVER_ISSUER is set."""

from __future__ import annotations

import dataclasses

import pytest

from authserver.cli.base import CliError
from authserver.cli.serve import choose_issuer
from authserver.config import Settings


@pytest.fixture(autouse=True)
def no_issuer(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTHSERVER_ISSUER", raising=False)
    (tmp_path / "settings.toml").write_text('env = "development"\n')
    monkeypatch.setenv("AUTHSERVER_CONFIG", str(tmp_path / "settings.toml"))


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "http://127.0.0.1:9000"), ("localhost", "http://localhost:9000"),
    ("::1", "http://[::1]:9000")])
def test_unset_the_issuer_is_the_address_served(host, expected):
    assert choose_issuer(Settings(), host, 9000) == (expected, None)


EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - what --host is given, nothing binds here


def test_every_address_gives_loopback_with_a_warning_and_production_refuses():
    issuer, warning = choose_issuer(Settings(), EVERY_ADDRESS, 9000)
    assert issuer == "http://127.0.0.1:9000" and "AUTHSERVER_ISSUER is not set" in warning
    with pytest.raises(CliError, match="set AUTHSERVER_ISSUER"):
        choose_issuer(dataclasses.replace(Settings(), env="production"), EVERY_ADDRESS, 9000)


def test_a_configured_issuer_is_kept_and_a_port_mismatch_on_loopback_warned(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("AUTHSERVER_ISSUER", "http://127.0.0.1:8000")
    issuer, warning = choose_issuer(Settings(), "127.0.0.1", 9000)
    assert issuer == "http://127.0.0.1:8000"
    assert "names port 8000 but this server listens on 9000" in warning
    assert "\n" not in warning
    assert choose_issuer(Settings(), "127.0.0.1", 8000) == ("http://127.0.0.1:8000", None)
    public = dataclasses.replace(Settings(), issuer="https://auth.example.com")
    assert choose_issuer(public, "127.0.0.1", 9000) == ("https://auth.example.com", None)
    monkeypatch.delenv("AUTHSERVER_ISSUER")
    (tmp_path / "settings.toml").write_text('issuer = "http://127.0.0.1:8000"\n')
    assert choose_issuer(Settings(), "127.0.0.1", 9000)[1] is not None  # set in the file
