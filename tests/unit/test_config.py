"""Settings: defaults <- config file <- AUTHSERVER_* environment <- overrides; eager validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from authserver import app as app_module
from authserver import config
from authserver.config import DEV_SECRET_KEY, ConfigError, load_settings

GOOD_SECRET = "s" * 40
REPO = Path(__file__).resolve().parents[2]


def test_defaults():
    settings = load_settings(environ={})
    assert settings.env == "development"
    assert settings.access_token_ttl == 900
    assert settings.audience == settings.issuer


def test_precedence_file_then_environment_then_overrides(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('issuer = "https://file.example"\naccess_token_ttl = 300\n'
                      'jwks_max_age = 120\n')
    env = {"AUTHSERVER_CONFIG": str(config), "AUTHSERVER_ACCESS_TOKEN_TTL": "600",
           "AUTHSERVER_JWKS_MAX_AGE": "60"}
    settings = load_settings({"jwks_max_age": 30}, environ=env)
    assert settings.issuer == "https://file.example"  # file
    assert settings.access_token_ttl == 600  # environment beats file
    assert settings.jwks_max_age == 30  # override beats environment


def test_postgres_url_uses_psycopg():
    settings = load_settings(environ={"AUTHSERVER_DATABASE_URL": "postgresql://u@h/db"})
    assert settings.database_url == "postgresql+psycopg://u@h/db"


def test_every_problem_is_reported_at_once_with_its_key():
    env = {"AUTHSERVER_ENV": "production", "AUTHSERVER_ISSUER": "http://auth.example.com",
           "AUTHSERVER_ACCESS_TOKEN_TTL": "ten", "AUTHSERVER_JWKS_MAX_AGE": "-5",
           "AUTHSERVER_DATABASE_URL": "mysql://x"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    text = "\n".join(info.value.problems)
    for key in ("AUTHSERVER_ISSUER", "AUTHSERVER_SECRET_KEY", "AUTHSERVER_ACCESS_TOKEN_TTL",
                "AUTHSERVER_JWKS_MAX_AGE", "AUTHSERVER_DATABASE_URL"):
        assert key in text, key
    assert len(info.value.problems) == 5


@pytest.mark.parametrize(
    ("issuer", "secret", "ok"),
    [
        pytest.param("https://auth.example.com", GOOD_SECRET, True, id="https"),
        pytest.param("http://127.0.0.1:8000", GOOD_SECRET, True, id="loopback-http"),
        pytest.param("http://localhost:8000", GOOD_SECRET, True, id="localhost-http"),
        pytest.param("http://auth.example.com", GOOD_SECRET, False, id="plain-http"),
        pytest.param("https://auth.example.com", DEV_SECRET_KEY, False, id="default-secret"),
        pytest.param("https://auth.example.com", "", False, id="missing-secret"),
        pytest.param("https://auth.example.com", "short", False, id="short-secret"),
        pytest.param("https://auth.example.com/", GOOD_SECRET, False, id="trailing-slash"),
        pytest.param("https://auth.example.com", " " * 40, False, id="blank-secret"),
        pytest.param("https://ops:pw@auth.example.com", GOOD_SECRET, False, id="userinfo"),
        pytest.param("HTTPS://auth.example.com", GOOD_SECRET, False, id="upper-case-scheme"),
        pytest.param("https://Auth.example.com", GOOD_SECRET, False, id="upper-case-host"),
        pytest.param("http://[::1]:8000", GOOD_SECRET, True, id="ipv6-loopback"),
    ],
)
def test_production_posture(issuer, secret, ok):
    env = {"AUTHSERVER_ENV": "production", "AUTHSERVER_ISSUER": issuer,
           "AUTHSERVER_SECRET_KEY": secret}
    if ok:
        assert load_settings(environ=env).production
    else:
        with pytest.raises(ConfigError):
            load_settings(environ=env)


def test_unknown_key_in_file_and_bad_toml(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('isuer = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'isuer'"):
        load_settings(environ={"AUTHSERVER_CONFIG": str(config)})
    config.write_text("issuer = \n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(environ={"AUTHSERVER_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"AUTHSERVER_CONFIG": str(tmp_path / "missing.toml")})


def test_unknown_env_value_for_env():
    with pytest.raises(ConfigError, match="AUTHSERVER_ENV"):
        load_settings(environ={"AUTHSERVER_ENV": "staging"})


def test_an_unknown_variable_is_named_in_a_warning(caplog):
    with caplog.at_level("WARNING", logger="authserver.config"):
        load_settings(environ={"AUTHSERVER_ISUER": "https://typo.example",
                               "AUTHSERVER_TEST_POSTGRES_URL": "postgresql://x/y"})
    assert [r.getMessage() for r in caplog.records] == [
        "settings: AUTHSERVER_ISUER is not a setting and is ignored"]


def test_a_source_checkout_uses_its_top_level_migrations_and_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The editable install (make run, make test) reads the folders people edit; a wheel
    reads its own copies. Settings: config/default.toml in the working directory first."""
    assert Path(app_module.MIGRATIONS_DIR) == REPO / "migrations"
    assert config.SHIPPED_CONFIG_FILE == REPO / "config" / "default.toml"

    shipped = tmp_path / "shipped.toml"
    shipped.write_text("access_token_ttl = 600\n")
    monkeypatch.setattr(config, "SHIPPED_CONFIG_FILE", shipped)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert config.load_settings(environ={}).access_token_ttl == 600

    (elsewhere / "config").mkdir()
    (elsewhere / "config" / "default.toml").write_text("access_token_ttl = 700\n")
    assert config.load_settings(environ={}).access_token_ttl == 700
    assert config.load_settings(environ={"AUTHSERVER_CONFIG": str(shipped)}
                                ).access_token_ttl == 600
