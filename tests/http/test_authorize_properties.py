"""Hypothesis: redirect-URI matching (RFC 6749 §3.1.2.3, OAuth 2.1 exact match, RFC 8252
§7.3 loopback ports) and scope parsing (RFC 6749 §3.3) are languages; test them as such."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from authserver.domain import redirect_uris, scopes
from authserver.domain.errors import ValidationError
from tests.support.authorize import start

# -- Redirect URIs -------------------------------------------------------------------------

SEGMENT = st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@", min_size=0,
                  max_size=12)
PATH = st.lists(SEGMENT, max_size=4).map(lambda parts: "/" + "/".join(parts))
QUERY = st.one_of(st.just(""), st.text(string.ascii_letters + string.digits + "=&-_.",
                                       max_size=16).map(lambda q: "?" + q))
HOST = st.sampled_from(["app.example.com", "example.org", "localhost", "127.0.0.1", "[::1]",
                        "10.0.0.1", "127.0.0.2", "[::2]"])
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
SCHEME = st.sampled_from(["https", "http", "com.example.app"])
LOOPBACK_HOST = st.sampled_from(["127.0.0.1", "[::1]"])


@st.composite
def uris(draw) -> str:
    scheme = draw(SCHEME)
    if scheme == "com.example.app":  # a private-use scheme (RFC 8252 §7.1)
        return f"{scheme}:{draw(PATH)}{draw(QUERY)}"
    return f"{scheme}://{draw(HOST)}{draw(PORT)}{draw(PATH)}{draw(QUERY)}"


def oracle(requested: str, registered: str) -> bool:
    """The rule, written independently: identical, or both http loopback IP literals that
    differ only in the port (a valid one)."""
    if "#" in requested:
        return False
    if requested == registered:
        return True

    def parts(uri: str) -> tuple[str, str] | None:
        """(loopback host, everything after the authority), or None."""
        if not uri.startswith("http://"):
            return None
        after = uri[len("http://"):]
        cut = min([after.index(c) for c in "/?" if c in after], default=len(after))
        authority, rest = after[:cut], after[cut:]
        for host in ("127.0.0.1", "[::1]"):
            if authority == host:
                return host, rest
            port = authority[len(host) + 1:] if authority.startswith(host + ":") else ""
            if port.isascii() and port.isdigit() and len(port) <= 5 and \
                    1 <= int(port) <= 65535:
                return host, rest
        return None

    a, b = parts(requested), parts(registered)
    return a is not None and a == b


@given(registered=uris())
def test_a_registered_uri_matches_itself(registered):
    assume("#" not in registered)
    assert redirect_uris.matches(registered, [registered])


@given(requested=uris(), registered=uris())
@example("http://127.0.0.1:5000/cb", "http://127.0.0.1/cb")
@example("http://[::1]/cb", "http://[::1]:80/cb")
@example("http://localhost:5000/cb", "http://localhost/cb")
@example("https://127.0.0.1:5000/cb", "https://127.0.0.1/cb")
def test_matching_is_exact_except_for_loopback_ports(requested, registered):
    assert redirect_uris.matches(requested, [registered]) == oracle(requested, registered)


@given(registered=uris(), port=st.integers(1, 65535), host=LOOPBACK_HOST, path=PATH,
       query=QUERY, registered_port=PORT)
def test_loopback_ip_registrations_accept_any_port(registered, port, host, path, query,
                                                   registered_port):
    loopback = f"http://{host}{registered_port}{path}{query}"
    assert redirect_uris.matches(f"http://{host}:{port}{path}{query}", [registered, loopback])


@given(registered=uris(), data=st.data())
def test_never_a_prefix_or_substring_match(registered, data):
    assume(redirect_uris._split_loopback(registered) is None)  # ports aside, same rule
    cut = data.draw(st.integers(0, len(registered) - 1))
    extra = data.draw(st.text(min_size=1, max_size=20))
    assert not redirect_uris.matches(registered[:cut], [registered])
    assert not redirect_uris.matches(registered + extra, [registered])
    assert not redirect_uris.matches(extra + registered, [registered])


@given(registered=uris(), fragment=st.text(max_size=10))
def test_fragments_are_never_accepted(registered, fragment):
    requested = registered + "#" + fragment
    assert not redirect_uris.matches(requested, [registered, requested])


@given(scheme=st.sampled_from(["https", "http"]), host=HOST, port=PORT,
       new_port=st.integers(1, 65535), path=PATH, query=QUERY)
def test_other_hosts_never_get_port_freedom(scheme, host, port, new_port, path, query):
    """Only http + a loopback IP literal: not https, not localhost, not 127.0.0.2."""
    assume(scheme == "https" or host not in ("127.0.0.1", "[::1]"))
    assume(port != f":{new_port}")
    registered = f"{scheme}://{host}{port}{path}{query}"
    assert not redirect_uris.matches(f"{scheme}://{host}:{new_port}{path}{query}", [registered])


# -- Scopes ------------------------------------------------------------------------------

SCOPE_CHARS = "".join(chr(c) for c in [0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])
TOKEN = st.text(SCOPE_CHARS, min_size=1, max_size=20)
BAD_CHAR = st.sampled_from(['"', "\\", "\t", "\n", "\x00", "\x7f", "é", "\u2028", "\u00a0"])


@given(tokens=st.lists(TOKEN, max_size=8))
def test_scope_round_trip_keeps_order_and_drops_duplicates(tokens):
    unique = list(dict.fromkeys(tokens))
    assert scopes.parse(scopes.render(tokens)) == unique
    assert scopes.parse(scopes.render(tokens + tokens)) == unique
    assert scopes.render(scopes.parse(scopes.render(unique))) == scopes.render(unique)


@given(tokens=st.lists(TOKEN, min_size=1, max_size=5), gaps=st.lists(st.integers(1, 3),
                                                                      min_size=6, max_size=6))
def test_extra_spaces_between_tokens_do_not_matter(tokens, gaps):
    spaced = "".join(" " * gap + token for gap, token in zip(gaps, tokens, strict=False))
    assert scopes.parse(spaced + " ") == list(dict.fromkeys(tokens))


@given(before=st.text(SCOPE_CHARS, max_size=5), bad=BAD_CHAR,
       after=st.text(SCOPE_CHARS, max_size=5), others=st.lists(TOKEN, max_size=3))
def test_only_the_rfc_6749_charset_is_accepted(before, bad, after, others):
    with pytest.raises(ValidationError):
        scopes.parse(scopes.render([*others, before + bad + after]))


@given(text=st.text(max_size=60))
def test_any_input_parses_to_valid_tokens_or_fails_cleanly(text):
    try:
        tokens = scopes.parse(text)
    except ValidationError:
        return
    assert all(token and set(token) <= set(SCOPE_CHARS) and token in text.split(" ")
               for token in tokens)
    assert len(tokens) == len(set(tokens))


# -- Over HTTP: whatever the redirect_uri, the browser only goes where registered ----------

@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requested=uris())
def test_the_endpoint_redirects_only_to_registered_uris(person, spa, requested):
    params, _ = start(spa, redirect_uri=requested, response_type="token")
    response = person.authorize(**params)
    if response.status_code == 400:
        assert "Location" not in response.headers
    else:
        assert response.headers["Location"].startswith("https://app.example.com/callback?")
