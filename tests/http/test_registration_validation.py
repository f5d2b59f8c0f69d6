"""The one set of registration rules (domain.client_metadata), as a language: table-driven
cases for redirect URIs and grant types, and properties over arbitrary input."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authserver.domain.client_metadata import (
    ClientSpec,
    check_redirect_uri,
    check_response_types,
    validate_spec,
)
from authserver.domain.errors import ValidationError
from tests.support.admin import admin_token, bearer, count_clients


@pytest.mark.parametrize("uri", [
    "https://app.example.com/callback",
    "https://app.example.com:8443/cb?tenant=a",
    "http://127.0.0.1/callback",  # RFC 8252 §7.3 loopback
    "http://127.0.0.1:51004/oauth2redirect",
    "http://[::1]:8080/cb",
    "http://localhost:3000/cb",
    "com.example.app:/oauth2redirect/example-provider",  # RFC 8252 §7.1
    "com.example.app://callback",
])
def test_accepted_redirect_uris(uri):
    check_redirect_uri(uri)


@pytest.mark.parametrize(("uri", "why"), [
    ("", "non-empty"),
    ("/callback", "absolute"),
    ("app.example.com/cb", "absolute"),
    ("example.com:8080/cb", "absolute"),
    ("https://app.example.com/cb#top", "fragment"),
    ("https://app.example.com/cb#", "fragment"),
    ("http://app.example.com/cb", "https"),
    ("http://127.0.0.2.nip.io/cb", "https"),
    ("https:///cb", "no host"),
    ("https://user@app.example.com/cb", "user name"),
    ("https://app.example.com/c b", "spaces"),
    ("https://app.example.com/\ncb", "control"),
    ("https://[::1/cb", "not a valid URI"),
    ("https://app.example.com:0x50/cb", "not a valid URI"),
    ("myapp:/callback", "reversed domain"),
    ("javascript:alert(1)", "reversed domain"),
    ("data:text/html,hi", "reversed domain"),
    ("file:///etc/passwd", "reversed domain"),
    ("https://app.example.com/" + "a" * 2000, "longer than"),
])
def test_refused_redirect_uris_say_why(uri, why):
    with pytest.raises(ValidationError) as caught:
        check_redirect_uri(uri)
    assert caught.value.field == "redirect_uris"
    assert why in str(caught.value)


@pytest.mark.parametrize(("spec", "field", "why"), [
    (dict(grant_types=["refresh_token"]), "grant_types", "refresh_token needs"),
    (dict(grant_types=["client_credentials", "refresh_token"]), "grant_types",
     "refresh_token needs"),
    (dict(public=True, grant_types=["client_credentials"]), "grant_types", "public client"),
    (dict(grant_types=["password", "refresh_token"]), "grant_types", "first-party"),
    (dict(grant_types=["authorization_code"]), "redirect_uris", "redirect URI"),
    (dict(public=True), "redirect_uris", "public client needs"),
    (dict(public=True, first_party=True, allow_introspection=True), "allow_introspection",
     "confidential"),
    (dict(scope="admin:clients", public=True, first_party=True), "scope", "admin:"),
    (dict(scope="admin:clients", grant_types=["client_credentials", "authorization_code"],
          redirect_uris=["https://a.example/cb"]), "scope", "admin:"),
    (dict(access_token_ttl=59), "access_token_ttl", "60 to 86400"),
    (dict(refresh_absolute_ttl=None), "refresh_absolute_ttl", "whole number"),
    (dict(name=""), "name", "1 to 255"),
])
def test_grant_rules(spec, field, why):
    with pytest.raises(ValidationError) as caught:
        validate_spec(ClientSpec(**{"name": "App", **spec}))
    assert caught.value.field == field
    assert why in str(caught.value)


def test_defaults_follow_the_clients_shape():
    assert validate_spec(ClientSpec(name="m")).grant_types == ["client_credentials"]
    assert validate_spec(ClientSpec(name="a", public=True, first_party=True)).grant_types == [
        "password", "refresh_token"]
    web = validate_spec(ClientSpec(name=" w ", redirect_uris=["https://a.example/cb"] * 2))
    assert web.grant_types == ["authorization_code", "refresh_token"]
    assert web.name == "w" and web.redirect_uris == ["https://a.example/cb"]
    admin = validate_spec(ClientSpec(name="ops", scope="admin:clients  read"))
    assert admin.scope == "admin:clients read"


def test_response_types_go_with_the_code_grant():
    assert check_response_types(["code"], ["authorization_code"]) == ["code"]
    assert check_response_types([], ["client_credentials"]) == []
    for response_types, grants in ((["code"], ["client_credentials"]),
                                   ([], ["authorization_code"]), (["token"], []),
                                   (["code id_token"], ["authorization_code"]), ("code", [])):
        with pytest.raises(ValidationError) as caught:
            check_response_types(response_types, grants)
        assert caught.value.field == "response_types"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_accepted_only_if_it_is_a_safe_redirect_uri(uri):
    try:
        check_redirect_uri(uri)
    except ValidationError as exc:
        assert exc.field == "redirect_uris"
        return
    parts = urlsplit(uri)
    assert parts.scheme and "#" not in uri and " " not in uri
    assert parts.username is None and parts.password is None
    if parts.scheme == "http":
        assert parts.hostname in ("127.0.0.1", "::1", "localhost")
    elif parts.scheme == "https":
        assert parts.hostname
    else:
        assert "." in parts.scheme


@settings(max_examples=200, deadline=None)
@given(st.builds(
    lambda origin, path: origin + path,
    st.one_of(
        st.builds("{}://{}".format, st.sampled_from(["https", "HTTPS", "com.example.app"]),
                  st.sampled_from(["a.example", "b.example:8443", "127.0.0.1"])),
        st.builds("http://{}".format,
                  st.sampled_from(["127.0.0.1", "[::1]", "localhost", "127.0.0.1:8080"])),
    ),
    st.from_regex(r"\A(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[0-9]{1,3})?\Z"),
))
def test_well_formed_uris_are_accepted(uri):
    check_redirect_uri(uri)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=10), children, max_size=3),
    max_leaves=6,
)
MEMBERS = ["client_name", "redirect_uris", "grant_types", "response_types", "scope",
           "token_endpoint_auth_method", "post_logout_redirect_uris", "access_token_ttl",
           "refresh_idle_ttl", "refresh_absolute_ttl", "reuse_grace", "bind_device_id",
           "bind_user_agent", "bind_ip", "require_device_id", "on_binding_mismatch",
           "require_dpop", "first_party", "allow_introspection"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(MEMBERS), JSON, max_size=6))
def test_no_registration_body_causes_a_server_error(oauth, app, body):
    """Any JSON object: 201 with a valid registration, else 400 naming a field."""
    token = getattr(app, "_admin_token", None) or admin_token(oauth)
    app._admin_token = token  # one admin client for every example
    before = count_clients(app)
    response = oauth.client.post("/oauth/register", json={"client_name": "Fuzz", **body},
                                 headers=bearer(token))
    assert response.status_code in (201, 400), response.get_data(True)
    if response.status_code == 400:
        error = response.get_json()
        assert error["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
        assert ": " in error["error_description"]
        assert count_clients(app) == before
