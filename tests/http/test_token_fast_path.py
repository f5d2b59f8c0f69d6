"""The refresh grant's fast path (``protocol/token_fast_path.py``): which requests it takes,
and that its answers are the Flask view's, status, headers and body."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from authserver.extensions import db
from authserver.protocol.token_fast_path import TokenFastPath
from authserver.storage.models import TokenFamily
from tests.support.oauth import basic


@pytest.fixture
def view_calls(app, monkeypatch) -> list[str]:
    """Requests that reached the Flask token view."""
    calls: list[str] = []
    view = app.view_functions["token.token"]

    def counted():
        calls.append("view")
        return view()

    monkeypatch.setitem(app.view_functions, "token.token", counted)
    return calls


@pytest.fixture
def without_fast_path(monkeypatch):
    """Turn the fast path off: every request goes to the view."""
    def off():
        monkeypatch.setattr(TokenFastPath, "_form", lambda self, environ: None)
    return off


def _refresh_form(app_client, token, **extra):
    return {"grant_type": "refresh_token", "refresh_token": token,
            "client_id": app_client.client_id, **extra}


def test_an_ordinary_refresh_never_reaches_flask(oauth, view_calls):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]
    view_calls.clear()
    response = oauth.token(_refresh_form(app_client, token))
    assert response.status_code == 200, response.get_data(True)
    assert view_calls == []
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.mimetype == "application/json"
    # Its errors are its own too: an unknown token, a reused one.
    assert oauth.token(_refresh_form(app_client, "rt_unknown")).status_code == 400
    assert view_calls == []


@pytest.mark.parametrize("case", [
    "query string", "dpop header", "repeated parameter", "json body", "long parameter",
    "missing refresh_token", "unknown client", "device ids differ", "other grant",
])
def test_anything_unusual_goes_to_the_view_unchanged(oauth, client, view_calls, case):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]
    view_calls.clear()
    form = _refresh_form(app_client, token)
    kwargs: dict = {"data": form}
    if case == "query string":
        kwargs["query_string"] = {"x": "1"}
    elif case == "dpop header":
        kwargs["headers"] = {"DPoP": "not.a.proof"}
    elif case == "repeated parameter":
        kwargs["data"] = MultiDict([*form.items(), ("scope", "read"), ("scope", "write")])
    elif case == "json body":
        kwargs = {"json": form}
    elif case == "long parameter":
        kwargs["data"] = {**form, "device_id": "d" * 5000}
    elif case == "missing refresh_token":
        kwargs["data"] = {k: v for k, v in form.items() if k != "refresh_token"}
    elif case == "unknown client":
        kwargs["data"] = {**form, "client_id": "no-such-client"}
    elif case == "device ids differ":
        kwargs["data"] = {**form, "device_id": "device-0001"}
        kwargs["headers"] = {"X-Device-Id": "device-0002"}
    elif case == "other grant":
        kwargs["data"] = {**form, "grant_type": "client_credentials"}
    response = client.post("/oauth/token", **kwargs)
    assert view_calls == ["view"], case
    assert response.status_code in (400, 401), response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    # Nothing changed: the token still rotates (through the fast path).
    assert oauth.refresh(app_client, token).status_code == 200


def _scenario(oauth, clock, app_client):
    """Every outcome of a refresh: success, retry inside grace, scope errors, reuse, then
    the revoked family, an unknown token; as (status, headers, body-without-tokens)."""
    token = oauth.login_pair(app_client)["refresh_token"]
    seen = []

    def send(form, headers=None):
        response = oauth.token(form, headers=headers)
        headers = sorted((k, v) for k, v in response.headers.items()
                         if k not in ("Content-Length", "X-Request-Id"))
        raw = response.get_data()
        body = json.loads(raw)
        for name in ("access_token", "refresh_token", "id_token"):
            if name in body:
                raw = raw.replace(body[name].encode(), b"<token>")  # byte for byte
        seen.append((response.status_code, headers, raw))
        return response

    second = send(_refresh_form(app_client, token)).get_json()["refresh_token"]
    clock.advance(3)
    send(_refresh_form(app_client, token))  # retry inside the window
    send(_refresh_form(app_client, second, scope="read admin"))  # wider than granted
    send(_refresh_form(app_client, second, scope="read"))  # narrower: fine
    clock.advance(30)
    send(_refresh_form(app_client, token))  # reuse: the family is revoked
    send(_refresh_form(app_client, second))
    send(_refresh_form(app_client, "rt_" + "x" * 43))
    send(_refresh_form(app_client, "not-even-a-token"))
    return seen


def test_the_fast_path_answers_exactly_as_the_view(oauth, clock, without_fast_path):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    fast = _scenario(oauth, clock, app_client)
    without_fast_path()
    slow = _scenario(oauth, clock, app_client)
    assert [s for s, _, _ in fast] == [200, 200, 400, 200, 400, 400, 400, 400]
    assert fast == slow
    with oauth.app.app_context():
        reasons = db.session.scalars(select(TokenFamily.revoke_reason)).all()
    assert reasons.count("reuse_detected") == 2  # one family per scenario


def test_a_confidential_clients_refresh_takes_the_fast_path(oauth, view_calls):
    oauth.create_user()
    app_client, secret = oauth.create_client(first_party=True, scope="read")
    token = oauth.login_pair(app_client, secret=secret)["refresh_token"]
    view_calls.clear()
    response = oauth.token({"grant_type": "refresh_token", "refresh_token": token},
                           headers={"Authorization": basic(app_client.client_id, secret)})
    assert response.status_code == 200 and view_calls == []
    wrong = oauth.token({"grant_type": "refresh_token",
                         "refresh_token": response.get_json()["refresh_token"]},
                        headers={"Authorization": basic(app_client.client_id, "wrong")})
    assert wrong.status_code == 401 and view_calls == ["view"]
    assert wrong.headers["WWW-Authenticate"].startswith('Basic realm="authserver"')


def _machine(oauth):
    record, secret = oauth.create_client(grant_types=["client_credentials"], scope="read write")
    return record, secret


def _cc_scenario(oauth, record, secret):
    """client_credentials: success, narrower scope, client_secret_post, then every refusal."""
    seen = []
    auth = {"Authorization": basic(record.client_id, secret)}
    for form, headers in [
        ({"grant_type": "client_credentials"}, auth),
        ({"grant_type": "client_credentials", "scope": "read"}, auth),
        ({"grant_type": "client_credentials", "client_id": record.client_id,
          "client_secret": secret}, {}),
        ({"grant_type": "client_credentials", "scope": "admin"}, auth),
        ({"grant_type": "client_credentials"},
         {"Authorization": basic(record.client_id, "wrong")}),
        ({"grant_type": "client_credentials", "client_id": record.client_id}, {}),
        ({"grant_type": "client_credentials"}, {}),
    ]:
        response = oauth.token(form, headers=headers)
        raw = response.get_data()
        body = json.loads(raw)
        if "access_token" in body:
            claims = oauth.verify_access_token(body["access_token"])
            assert claims["sub"] == claims["client_id"] == record.client_id
            raw = raw.replace(body["access_token"].encode(), b"<token>")  # byte for byte
        headers = sorted((k, v) for k, v in response.headers.items()
                         if k not in ("Content-Length", "X-Request-Id"))
        seen.append((response.status_code, headers, raw))
    return seen


def test_client_credentials_take_the_fast_path_and_answer_as_the_view(
        oauth, view_calls, without_fast_path):
    record, secret = _machine(oauth)
    fast = _cc_scenario(oauth, record, secret)
    assert [s for s, _, _ in fast] == [200, 200, 200, 400, 401, 401, 401]
    assert view_calls == ["view"] * 4  # only the refusals reached Flask
    without_fast_path()
    assert _cc_scenario(oauth, record, secret) == fast
    first, narrower = json.loads(fast[0][2]), json.loads(fast[1][2])
    assert first["scope"] == "read write" and narrower["scope"] == "read"
    assert "refresh_token" not in first


def test_a_disabled_machine_client_is_refused_at_once_on_the_fast_path(oauth, app):
    from authserver.domain import client_admin

    record, secret = _machine(oauth)
    auth = {"Authorization": basic(record.client_id, secret)}
    assert oauth.token({"grant_type": "client_credentials"}, headers=auth).status_code == 200
    with app.app_context():
        client_admin.set_active(db.session, record.client_id, False)
        db.session.commit()
    assert oauth.token({"grant_type": "client_credentials"}, headers=auth).status_code == 401


def test_a_body_the_client_never_finishes_is_the_views_400(oauth, app, view_calls):
    """Content-Length promises more than arrives (the client went away): the view's 400,
    as without the fast path, never a 500."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    class Broken:
        def read(self, *_args):
            raise OSError("connection reset")

    environ = EnvironBuilder(path="/oauth/token", method="POST",
                             data={"grant_type": "refresh_token", "refresh_token": "rt_x",
                                   "client_id": "someone"}).get_environ()
    environ["wsgi.input"] = Broken()
    body, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("400 ")
    assert json.loads(b"".join(body))["error"] == "invalid_request"
    assert view_calls == ["view"]


@pytest.mark.parametrize(("host", "content_length"), [
    ("[:1]", None), ("[1:2:3]:5000", None), (None, "0" * 4301 + "5"), (None, "9" * 5000),
])
def test_a_host_or_length_werkzeug_cannot_use_is_a_400_never_a_500(
        oauth, app, view_calls, host, content_length):
    """A bracketed Host that is no IPv6 address; a Content-Length of thousands of digits
    (past Python's int() limit; werkzeug reads it as 0)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]
    environ = EnvironBuilder(path="/oauth/token", method="POST",
                             data=_refresh_form(app_client, token)).get_environ()
    if host is not None:
        environ["HTTP_HOST"] = host
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    view_calls.clear()
    body, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("400 "), status
    assert json.loads(b"".join(body))["error"] == "invalid_request"
    # A bad Host is refused before any view runs; the empty form by the token view.
    assert view_calls == ([] if host is not None else ["view"])
    assert oauth.refresh(app_client, token).status_code == 200  # nothing changed
