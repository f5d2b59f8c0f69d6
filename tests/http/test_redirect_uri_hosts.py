"""Redirect URIs name their host as a browser will read it and their app by a domain its
owner holds: non-ASCII hosts are refused with the A-label to use instead, A-labels must be
valid IDNA 2008 and of one script, private-use schemes are reversed domain names and only
for public clients. One rule set (``domain.client_metadata``), so the table runs at the
domain, and one row each through the registration API and the CLI shows it is the one they
use (docs/design.md, "Hardening")."""

from __future__ import annotations

import pytest

from authserver.domain.client_metadata import ClientSpec, check_redirect_uri, validate_spec
from authserver.domain.errors import ValidationError
from tests.support.admin import admin_token, bearer, client_rows

# The rules are the server's, not the database's.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CYRILLIC_A = "\u0430"  # looks like a Latin "a"

REFUSED = [  # (uri, what the message must say)
    ("https://b\u00fccher.example/cb", "register its IDNA A-label form 'xn--bcher-kva.example'"),
    ("https://\u4f8b\u3048.jp/cb", "'xn--r8jz45g.jp'"),
    ("https://\u0411\u0430\u043d\u043a.example/cb", "'xn--80ab2al.example'"),
    ("https://B\u00dcCHER.example/cb", "'xn--bcher-kva.example'"),  # mapped (UTS 46)
    (f"https://{CYRILLIC_A}pple.example/cb", "mixes the Cyrillic and Latin scripts"),
    ("https://xn--pple-43d.example/cb", "mixes the Cyrillic and Latin scripts"),
    ("https://login.xn--pypal-4ve.com/cb", "mixes the Cyrillic and Latin scripts"),
    ("https://xn--80ak6aa92e.com/cb", "Cyrillic letters that look like Latin ones"),
    ("https://xn--zz.example/cb", "not a valid IDNA A-label"),
    ("https://xn--.example/cb", "by DNS name or IP address"),
    ("https://xn--a-ecp.example/cb", "not a valid IDNA A-label"),  # IDNA 2003 only
    ("https://a\u2488.example/cb", "not a valid international domain name"),
    ("https://%61pple.example/cb", "by DNS name or IP address"),
    ("https://app..example/cb", "by DNS name or IP address"),
    ("https://-app.example/cb", "by DNS name or IP address"),
    ("http://127.0.0.1\u3002evil.example/cb", "register its IDNA A-label form"),
    ("myapp:/cb", "reversed domain"),
    ("myapp://callback", "reversed domain"),
    ("com.:/cb", "reversed domain"),
    ("com..example:/cb", "reversed domain"),
    ("com.-example.app:/cb", "reversed domain"),
    ("com.example-.app:/cb", "reversed domain"),
    ("com+example.app:/cb", "reversed domain"),
    ("com.example.app://b\u00fccher/cb", "'xn--bcher-kva'"),
]

ACCEPTED = [
    "https://xn--bcher-kva.example/cb",  # bücher
    "https://xn--r8jz45g.jp/cb",  # Han and Hiragana together: allowed (UTS #39)
    "https://xn--80ab2al.xn--p1ai/cb",  # wholly Cyrillic under .рф
    "https://xn--e1afmkfd.example/cb",  # wholly Cyrillic, not all look-alikes
    "https://App.Example.com/cb",
    "http://[::1]:8080/cb",
    "com.example.app:/cb",
    "com.example:/cb",
    "com.example-corp.app2://callback",
]


@pytest.mark.parametrize(("uri", "why"), REFUSED)
@pytest.mark.parametrize("field", ["redirect_uris", "post_logout_redirect_uris"])
def test_refused_redirect_uris_say_why(uri, why, field):
    with pytest.raises(ValidationError) as caught:
        check_redirect_uri(uri, field)
    assert caught.value.field == field
    assert why in str(caught.value), str(caught.value)
    # The one rule set: a whole registration is refused for it too.
    with pytest.raises(ValidationError) as again:
        validate_spec(ClientSpec(**{"name": "App", "public": True,
                                    "redirect_uris": ["com.example.app:/cb"], field: [uri]}))
    assert again.value.field == field


@pytest.mark.parametrize("uri", ACCEPTED)
def test_accepted_redirect_uris(uri):
    check_redirect_uri(uri)
    check_redirect_uri(uri, "post_logout_redirect_uris")


@pytest.mark.parametrize("field", ["redirect_uris", "post_logout_redirect_uris"])
def test_private_use_schemes_are_for_public_clients_only(field):
    web = {"redirect_uris": ["https://app.example.com/cb"], field: ["com.example.app:/cb"]}
    with pytest.raises(ValidationError) as caught:
        validate_spec(ClientSpec(name="Web", public=False, **web))
    assert caught.value.field == field and "public" in str(caught.value)
    assert validate_spec(ClientSpec(name="Phone", public=True, **web)).public


def test_web_origins_follow_the_host_rules():
    from authserver.domain.client_metadata import web_origin
    assert web_origin("https://xn--bcher-kva.example") == "https://xn--bcher-kva.example"
    for origin, why in (("https://b\u00fccher.example", "xn--bcher-kva.example"),
                        ("https://xn--pple-43d.example", "mixes")):
        with pytest.raises(ValidationError) as caught:
            web_origin(origin)
        assert caught.value.field == "web_origins" and why in str(caught.value)


@SQLITE
def test_the_registration_api_refuses_them(oauth, app):
    token = admin_token(oauth)
    before = client_rows(app)
    for body, error, field in (
            ({"redirect_uris": ["https://xn--pple-43d.example/cb"]},
             "invalid_redirect_uri", "redirect_uris"),
            ({"redirect_uris": ["com.example.app:/cb"], "token_endpoint_auth_method":
              "client_secret_basic"}, "invalid_redirect_uri", "redirect_uris")):
        response = oauth.client.post("/oauth/register", headers=bearer(token), json={
            "client_name": "Notes", "grant_types": ["authorization_code"],
            "response_types": ["code"], **body})
        assert response.status_code == 400, response.get_data(True)
        answer = response.get_json()
        assert answer["error"] == error and field in answer["error_description"]
    assert client_rows(app) == before


@SQLITE
def test_the_cli_refuses_them_in_one_line(run, app):
    before = client_rows(app)
    result = run("clients", "create", "--name", "Shop", "--redirect-uri",
                 "https://b\u00fccher.example/cb")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "xn--bcher-kva.example" in lines[0], result.output
    assert "Traceback" not in result.output and client_rows(app) == before
