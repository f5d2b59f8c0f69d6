"""RFC 6749 §10.2: a code for a redirect that any app on the device may receive (loopback,
private-use scheme; RFC 8252 §8.6) is never issued without the person. Consent given once
is confirmed on each request, and ``prompt=none`` answers ``interaction_required``; an
``https`` redirect keeps silent sign-in (docs/clients.md, "prompt=none and apps on a device")."""

from __future__ import annotations

import pytest

from tests.support.authorize import REDIRECT, exchange, sign_in_and_consent, start
from tests.support.oauth import redirect_params

# The rules are the server's, not the database's: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LOOPBACK = "http://127.0.0.1/callback"
PRIVATE_USE = "com.example.budget:/callback"


@pytest.mark.parametrize("redirect_uri, requested, kind", [
    (LOOPBACK, "http://127.0.0.1:53122/callback", {"public": True}),
    (PRIVATE_USE, PRIVATE_USE, {"public": True}),
    ("http://localhost/callback", "http://localhost/callback", {"public": True}),
    (LOOPBACK, LOOPBACK, {"public": True, "first_party": True}),
], ids=["loopback", "private-use-scheme", "localhost", "first-party-loopback"])
def test_a_native_redirect_always_needs_the_person(person, oauth, redirect_uri, requested,
                                                   kind):
    oauth.create_user()
    native, _ = oauth.create_client(name="Budget CLI", scope="openid read",
                                    redirect_uris=[redirect_uri], **kind)
    params, verifier = start(native, redirect_uri=requested, scope="openid read")
    silent = {**params, "prompt": "none"}
    assert redirect_params(person.authorize(**silent))["error"] == "login_required"
    if kind.get("first_party"):
        first = person.authorize(**params)
        signed_in = person.login(next_url=redirect_params(first)["next"])
        done = person.decide(person.client.get(signed_in.headers["Location"]))
    else:
        done = sign_in_and_consent(person, params)
    code = redirect_params(done)["code"]
    assert exchange(oauth, native, code, verifier, redirect_uri=requested).status_code == 200

    # Signed in, consent remembered: still no code without the person.
    answer = redirect_params(person.authorize(**silent))
    assert answer["error"] == "interaction_required", answer
    assert answer["state"] == "xyz-123" and answer["iss"] == "http://127.0.0.1:8000"
    assert "code" not in answer
    page = person.authorize(**params)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Continue to Budget CLI as alice?" in text and 'id="allow"' in text
    assert redirect_params(person.decide(page, "allow"))["code"]
    # Declining the confirmation is access_denied, as on the consent page.
    declined = redirect_params(person.decide(person.authorize(**params), "deny"))
    assert declined["error"] == "access_denied"


def test_an_https_redirect_keeps_silent_sign_in(person, spa):
    params, _ = start(spa)
    sign_in_and_consent(person, params)
    assert params["redirect_uri"] == REDIRECT
    assert "code" in redirect_params(person.authorize(**{**params, "prompt": "none"}))
    assert "code" in redirect_params(person.authorize(**params))


def test_prompt_none_without_consent_is_still_consent_required(person, oauth):
    oauth.create_user()
    native, _ = oauth.create_client(name="Budget CLI", public=True, scope="read",
                                    redirect_uris=[LOOPBACK])
    person.login()
    params, _ = start(native, redirect_uri=LOOPBACK, scope="read", nonce=None, prompt="none")
    assert redirect_params(person.authorize(**params))["error"] == "consent_required"
