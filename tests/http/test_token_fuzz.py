"""Property tests: whatever arrives at ``POST /oauth/token``, the answer is JSON, a success
with an access token or an RFC 6749 §5.2 error with a sensible status, never cached, and
never a 500.

Bodies are form-encoded lists of parameters (real names with garbage values, garbage names,
unicode, control characters, huge values, repeats) or raw bytes; headers are random
``Authorization`` (schemes, base64 garbage, real client ids with wrong secrets), ``DPoP``,
``X-Device-Id``, ``User-Agent`` and ``Content-Type`` variants. Real credentials are mixed
in, so some requests succeed and change state on the way: the properties hold anyway.

503 is not an allowed answer: it means the database or the DPoP replay cache is
unavailable, and both are available here (the replay cache is the database in tests).
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.oauth import PASSWORD, basic

# One app per test function (per backend); its data is shared by all the examples.
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
STATUSES = {200, 400, 401, 413}
ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
          "unsupported_grant_type", "invalid_scope", "invalid_dpop_proof", "use_dpop_nonce"}
DESCRIPTION_CHARS = {chr(c) for c in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)]}

PARAMETERS = ["grant_type", "refresh_token", "client_id", "client_secret", "scope",
              "username", "password", "device_id", "code", "redirect_uri", "code_verifier"]
# Placeholders for the world's real values, filled in per example ("@token" and
# "@web_token" are fresh sign-ins each time, so successes stay reachable).
REAL = ["@mobile", "@web", "@machine", "@secret", "@machine_secret", "@token", "@web_token",
        "refresh_token", "password", "client_credentials", "authorization_code", "alice",
        PASSWORD, "read", "write", "read write", "device-0001"]

unicode_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
control_text = st.text(st.characters(max_codepoint=0x1f), min_size=1, max_size=10)
huge = st.builds(lambda ch, n: ch * n, st.characters(exclude_categories=["Cs"]),
                 st.integers(4000, 70_000))
values = st.one_of(st.sampled_from(REAL), unicode_text, control_text)
names = st.one_of(st.sampled_from(PARAMETERS), unicode_text.filter(bool),
                  st.text(max_size=200).filter(bool))
garbage_forms = st.lists(st.tuples(names, st.one_of(values, huge)), max_size=8)

latin1 = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
garbage_authorization = st.one_of(
    st.builds(lambda b: "Basic " + base64.b64encode(b).decode(), st.binary(max_size=80)),
    st.builds(lambda scheme, rest: f"{scheme} {rest}",
              st.sampled_from(["Basic", "basic", "Bearer", "DPoP", "Digest", "", "Negotiate"]),
              latin1),
    st.tuples(st.sampled_from(["@mobile", "@web", "@machine"]),
              st.one_of(st.sampled_from(["@secret", "@machine_secret", ""]), unicode_text)),
    latin1,
)
content_types = st.one_of(
    st.sampled_from(["application/x-www-form-urlencoded",
                     "application/x-www-form-urlencoded; charset=utf-8",
                     "application/x-www-form-urlencoded; charset=latin-1",
                     "APPLICATION/X-WWW-FORM-URLENCODED", "application/json",
                     "multipart/form-data; boundary=x", "text/plain", ""]),
    latin1,
)
extra_headers = st.fixed_dictionaries({}, optional={
    "DPoP": st.one_of(latin1, st.builds(lambda a, b, c: f"{a}.{b}.{c}", latin1, latin1,
                                        latin1)),
    "X-Device-Id": st.one_of(latin1, st.just("device-0001")),
    "User-Agent": latin1,
})

# A well-formed request of each grant: (form, client auth), placeholders unresolved.
BASES = {
    "password/none": ([("grant_type", "password"), ("username", "alice"),
                       ("password", PASSWORD), ("client_id", "@mobile")], None),
    "password/basic": ([("grant_type", "password"), ("username", "alice"),
                        ("password", PASSWORD)], ("@web", "@secret")),
    "password/post": ([("grant_type", "password"), ("username", "alice"), ("password", PASSWORD),
                       ("client_id", "@web"), ("client_secret", "@secret")], None),
    "refresh/none": ([("grant_type", "refresh_token"), ("refresh_token", "@token"),
                      ("client_id", "@mobile")], None),
    "refresh/basic": ([("grant_type", "refresh_token"), ("refresh_token", "@web_token")],
                      ("@web", "@secret")),
    "client_credentials/basic": ([("grant_type", "client_credentials")],
                                 ("@machine", "@machine_secret")),
    "client_credentials/post": ([("grant_type", "client_credentials"),
                                 ("client_id", "@machine"),
                                 ("client_secret", "@machine_secret")], None),
    "authorization_code/none": ([("grant_type", "authorization_code"), ("code", "abc"),
                                 ("redirect_uri", "https://x.example/cb"),
                                 ("code_verifier", "v" * 43), ("client_id", "@mobile")], None),
}


def _now_and_then(draw, one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


@st.composite
def token_requests(draw) -> tuple[list[tuple[str, str]], dict[str, object]]:
    """A well-formed request, then now and then mutated: values replaced, parameters
    dropped, repeated or added, a scope, the client authentication garbled, odd headers.
    Each mutation is rare enough that a good share of the requests get deep (or succeed)."""
    base, auth = BASES[draw(st.sampled_from(sorted(BASES)))]
    form: list[tuple[str, str]] = []
    for name, value in base:
        action = draw(st.integers(0, 14))  # 0 garbage, 1 drop, 2 repeat, else keep
        if action == 0:
            value = draw(values)
        if action != 1:
            form.append((name, value))
        if action == 2:
            form.append((name, draw(st.one_of(st.just(value), values))))
    if draw(st.booleans()):
        form.append(("scope", draw(st.one_of(st.sampled_from(["read", "write", "read write",
                                                              "admin", ""]), values))))
    if _now_and_then(draw, 4):
        form += draw(st.lists(st.tuples(names, values), min_size=1, max_size=2))
    if form and _now_and_then(draw, 10):  # one value far too long
        index = draw(st.integers(0, len(form) - 1))
        form[index] = (form[index][0], draw(huge))
    headers: dict[str, object] = {}
    if _now_and_then(draw, 4):
        headers.update(draw(extra_headers))
    if auth is not None:
        headers["Authorization"] = auth
    if _now_and_then(draw, 6):
        headers["Authorization"] = draw(garbage_authorization)
    return form, headers


@pytest.fixture
def world(oauth) -> World:
    """Real clients (conftest makes argon2 cheap in this process)."""
    oauth.create_user()
    mobile = oauth.first_party_app(name="mobile", reuse_grace=2)
    web, secret = oauth.create_client(name="web", first_party=True, scope="read write")
    machine, machine_secret = oauth.create_client(name="machine", scope="read",
                                                  grant_types=["client_credentials"])
    return World(oauth, {
        "@mobile": mobile.client_id, "@web": web.client_id, "@machine": machine.client_id,
        "@secret": secret, "@machine_secret": machine_secret,
    }, {"@token": mobile, "@web_token": web}, secret)


class World:
    def __init__(self, oauth, fixed: dict[str, str], signs_in: dict[str, object],
                 web_secret: str) -> None:
        self.oauth = oauth
        self.fixed = fixed
        self.signs_in = signs_in
        self.web_secret = web_secret

    def real(self, value: str) -> str:
        """A placeholder's real value; a refresh-token placeholder is a fresh sign-in."""
        if value in self.signs_in:
            client = self.signs_in[value]
            secret = self.web_secret if value == "@web_token" else None
            return self.oauth.login_pair(client, secret=secret)["refresh_token"]
        return self.fixed.get(value, value)

    def headers(self, drawn: dict[str, object]) -> dict[str, str]:
        result = {}
        for name, value in drawn.items():
            if isinstance(value, tuple):  # (client id, secret) placeholders for Basic
                value = basic(self.real(value[0]), self.real(value[1]))
            result[name] = self.real(str(value))
        return result

    def encode(self, form: list[tuple[str, str]]) -> bytes:
        return "&".join(f"{quote_plus(k)}={quote_plus(self.real(v))}" for k, v in form).encode()


def assert_sane(response) -> None:
    """JSON; a token or a §5.2 error; an allowed status; never cached."""
    raw = response.get_data(as_text=True)
    assert response.status_code in STATUSES, (response.status_code, raw)
    assert response.mimetype == "application/json", raw
    body = json.loads(raw)
    assert isinstance(body, dict)
    event(f"{response.status_code} {body.get('error', 'success')}")  # --hypothesis-show-statistics
    assert response.headers["Cache-Control"] == "no-store"
    if response.status_code == 200:
        assert isinstance(body["access_token"], str) and body["token_type"] in ("Bearer",
                                                                                 "DPoP")
        return
    assert body["error"] in ERRORS, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert set(body.get("error_description", "")) <= DESCRIPTION_CHARS, body
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"]


@FUZZ
@given(request=token_requests())
def test_mutated_token_requests(world, client, request):
    form, drawn = request
    headers = {"Content-Type": "application/x-www-form-urlencoded", **world.headers(drawn)}
    response = client.post("/oauth/token", data=world.encode(form), headers=headers)
    assert_sane(response)


@FUZZ
@given(form=garbage_forms, drawn=extra_headers, authorization=garbage_authorization,
       content_type=st.one_of(st.just("application/x-www-form-urlencoded"), content_types))
def test_arbitrary_form_bodies_and_headers(world, client, form, drawn, authorization,
                                           content_type):
    headers = {**world.headers(drawn), "Authorization": world.headers(
        {"a": authorization})["a"], "Content-Type": content_type}
    response = client.post("/oauth/token", data=world.encode(form), headers=headers)
    assert_sane(response)


@settings(FUZZ, max_examples=60)
@given(body=st.one_of(st.binary(max_size=300),
                      st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4),
                                st.integers(10_000, 70_000))),
       content_type=content_types)
def test_arbitrary_bytes(world, client, body, content_type):
    response = client.post("/oauth/token", data=body, headers={"Content-Type": content_type})
    assert_sane(response)
