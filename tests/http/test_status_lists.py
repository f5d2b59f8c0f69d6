"""The Token Status Lists served over HTTP (docs/design.md, "Revocation that reaches APIs"):
``GET /oauth/status/<id>`` as a ``statuslist+jwt`` that PyJWT verifies against the JWKS, a
changed entry after the list's version changes, ETag and 304, ``max-age`` = the ttl, the
per-process cache (statements counted), a database outage, the aggregation, discovery, and
a key rotation. The rows are written directly, as the domain writes them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, insert, update
from sqlalchemy.exc import OperationalError

from authserver.crypto.key_admin import KeyAdmin
from authserver.crypto.keystore import KeyStore
from authserver.extensions import db
from authserver.protocol import status_list_codec as codec
from authserver.protocol.tokens import AccessTokenIssuer
from authserver.storage.models import StatusList, TokenStatus
from tests.support.statements import recorded_statements, statements_of

ISSUER = "http://127.0.0.1:8000"  # tests/support/databases.py's
TTL = 30
SIZE = 1024
JWKS_PATH = "/.well-known/jwks.json"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"status_list_ttl": TTL, "status_list_size": SIZE}


class JWKS(jwt.PyJWKClient):
    """PyJWT's JWKS client, fetching the app's JWKS through the Flask test client."""

    def __init__(self, client: FlaskClient) -> None:
        super().__init__(ISSUER + JWKS_PATH, cache_jwk_set=False)
        self.flask_client = client

    def fetch_data(self) -> Any:
        return self.flask_client.get(JWKS_PATH).get_json()


def add_list(app: Flask, list_id: int, entries: dict[int, int], size: int = SIZE) -> None:
    """A list with ``entries`` (idx -> status), as the domain writes it."""
    now = dt.datetime.now(dt.UTC)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(StatusList).values(id=list_id, size=size, allocated=len(entries),
                                               version=0, created_at=now, updated_at=now))
        for idx, status in entries.items():
            conn.execute(insert(TokenStatus).values(
                list_id=list_id, idx=idx, status=status, owner_kind="family",
                owner_id=f"fam-{list_id}-{idx}", created_at=now))


def set_status(app: Flask, list_id: int, idx: int, status: int) -> None:
    """The domain's invalidation: the entry and the list's version, in one transaction."""
    now = dt.datetime.now(dt.UTC)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(TokenStatus).where(TokenStatus.list_id == list_id,
                                               TokenStatus.idx == idx)
                     .values(status=status, changed_at=now))
        conn.execute(update(StatusList).where(StatusList.id == list_id)
                     .values(version=StatusList.version + 1, updated_at=now))


def verified(client: FlaskClient, token: str) -> dict[str, Any]:
    """What a resource server does with a list: the key from the JWKS, the algorithm pinned
    to the key's, ``typ`` checked, the claims required."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "statuslist+jwt"
    key = JWKS(client).get_signing_key_from_jwt(token)
    # The leeway covers the tests' clock, which runs up to ~20 s ahead of the real one.
    return jwt.decode(token, key, algorithms=[key.algorithm_name], leeway=60,
                      options={"require": ["sub", "iat", "exp"]})


def statuses(claims: dict[str, Any]) -> dict[int, int]:
    """The entries of a verified list that are not VALID."""
    status_list = claims["status_list"]
    data = codec.decode(status_list["lst"])
    assert len(data) * 8 == SIZE
    return {idx: status for idx in range(SIZE)
            if (status := codec.status_at(data, idx, status_list["bits"]))}


def fetch(client: FlaskClient, list_id: int = 1) -> tuple[Any, dict[str, Any]]:
    response = client.get(f"/oauth/status/{list_id}",
                          headers={"Accept": "application/statuslist+jwt"})
    assert response.status_code == 200, response.get_data()
    return response, verified(client, response.get_data(as_text=True))


def snapshot_reads(statements: list[str]) -> int:
    """How many of ``statements`` read a list's entries."""
    return sum(1 for statement in statements if "token_statuses" in statement)


# -- the format ---------------------------------------------------------------------------
def test_the_codec_gives_the_drafts_examples_and_round_trips():
    # draft-ietf-oauth-status-list's examples: 16 entries of 1 bit, 12 entries of 2 bits.
    one_bit = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    assert codec.pack(16, [(i, s) for i, s in enumerate(one_bit) if s]) == bytes([0xB9, 0xA3])
    assert codec.encode(16, [(i, s) for i, s in enumerate(one_bit) if s]) == "eNrbuRgAAhcBXQ"
    two_bits = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
    assert codec.encode(12, [(i, s) for i, s in enumerate(two_bits) if s], 2) \
        == "eNo76fITAAPfAgc"
    data = codec.decode("eNo76fITAAPfAgc")
    assert [codec.status_at(data, i, 2) for i in range(12)] == two_bits

    rng = random.Random(13)
    entries = {idx: 1 for idx in rng.sample(range(1 << 17), 500)}
    data = codec.decode(codec.encode(1 << 17, entries.items()))
    assert {i for i in range(1 << 17) if codec.status_at(data, i)} == set(entries)
    with pytest.raises(codec.StatusListError):
        codec.decode(codec.encode(1 << 17, []), max_bytes=1024)  # a bomb stops there
    with pytest.raises(codec.StatusListError):
        codec.decode("not zlib!")


def test_a_list_is_a_statuslist_jwt_signed_by_the_active_key(app, client):
    add_list(app, 1, {3: 1, 700: 2, 9: 0})
    response, claims = fetch(client)
    assert response.mimetype == "application/statuslist+jwt"
    assert response.headers["Cache-Control"] == f"public, max-age={TTL}"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")

    header = jwt.get_unverified_header(response.get_data(as_text=True))
    active = app.extensions["authserver"].keys.active()
    assert (header["kid"], header["alg"]) == (active.kid, active.alg)
    assert claims["sub"] == f"{ISSUER}/oauth/status/1" and claims["iss"] == ISSUER
    assert claims["ttl"] == TTL and claims["exp"] - claims["iat"] == 2 * TTL
    assert claims["status_list"]["bits"] == 1
    assert claims["status_list"]["aggregation_uri"] == f"{ISSUER}/oauth/status"
    # 1 bit: INVALID and SUSPENDED are both "not valid"; every other entry is 0.
    assert statuses(claims) == {3: 1, 700: 1}


@pytest.mark.parametrize("settings_overrides", [{"status_list_ttl": 10},
                                                {"status_list_ttl": 600}])
def test_max_age_and_ttl_are_the_setting(app, client, settings_overrides):
    ttl = settings_overrides["status_list_ttl"]
    add_list(app, 1, {})
    response, claims = fetch(client)
    assert response.headers["Cache-Control"] == f"public, max-age={ttl}"
    assert claims["ttl"] == ttl and claims["exp"] == claims["iat"] + 2 * ttl


# -- what changes, and when ----------------------------------------------------------------
def test_a_revoked_entry_is_1_once_the_version_changed(app, client, clock):
    add_list(app, 1, {42: 0, 43: 0})
    first, claims = fetch(client)
    assert statuses(claims) == {}
    set_status(app, 1, 42, 1)
    # Within the second the version was read, the process serves what it has...
    assert client.get("/oauth/status/1").headers["ETag"] == first.headers["ETag"]
    clock.advance(1.1)  # ...then reads the version, sees it changed and reads the entries
    second, claims = fetch(client)
    assert second.headers["ETag"] != first.headers["ETag"]
    assert statuses(claims) == {42: 1}


def test_a_sign_in_is_valid_in_its_list_until_it_is_revoked(app, client, oauth, clock):
    oauth.create_user()
    mobile = oauth.first_party_app()
    pair = oauth.login_pair(mobile)
    reference = oauth.verify_access_token(pair["access_token"])["status"]["status_list"]
    uri, idx = reference["uri"], reference["idx"]
    assert uri.startswith(f"{ISSUER}/oauth/status/")
    list_token = client.get(urlsplit(uri).path).get_data(as_text=True)
    claims = verified(client, list_token)
    assert claims["sub"] == uri and statuses(claims) == {}
    revoked = client.post("/oauth/revoke", data={"token": pair["refresh_token"],
                                                 "client_id": mobile.client_id})
    assert revoked.status_code == 200
    clock.advance(1.1)
    claims = verified(client, client.get(urlsplit(uri).path).get_data(as_text=True))
    assert statuses(claims) == {idx: 1}  # this sign-in's entry, and no other


def test_etag_and_304(app, client):
    add_list(app, 1, {5: 1})
    response = client.get("/oauth/status/1")
    etag = response.headers["ETag"]
    for tags in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get("/oauth/status/1", headers={"If-None-Match": tags})
        assert cached.status_code == 304 and cached.get_data() == b"", tags
        assert cached.headers["ETag"] == etag
        assert cached.headers["Cache-Control"] == f"public, max-age={TTL}"
    assert client.get("/oauth/status/1", headers={"If-None-Match": '"old"'}).status_code == 200
    head = client.head("/oauth/status/1")
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["ETag"] == etag and head.mimetype == "application/statuslist+jwt"


def test_the_cache_reads_only_the_version_until_it_changes(app, client, clock):
    add_list(app, 1, {7: 1})
    get = lambda: client.get("/oauth/status/1")  # noqa: E731
    cold = statements_of(app, get)
    assert snapshot_reads(cold) == 1 and len(cold) <= 3  # the version, then the entries
    etag = get().headers["ETag"]
    assert statements_of(app, get) == []  # within the second: nothing read
    clock.advance(1.1)
    version_only = statements_of(app, get)
    assert len(version_only) == 1 and snapshot_reads(version_only) == 0
    assert get().headers["ETag"] == etag  # the same signed list
    clock.advance(TTL / 2)  # older than ttl/2: read again and signed again
    assert snapshot_reads(statements_of(app, get)) == 1
    assert get().headers["ETag"] != etag
    clock.advance(1.1)
    set_status(app, 1, 8, 1)  # no such entry: the version changes, the entries do not
    assert snapshot_reads(statements_of(app, get)) == 1


def test_concurrent_requests_read_the_list_once(app, clock):
    add_list(app, 1, {1: 1})
    answers: list[int] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(client.get("/oauth/status/1").status_code)

    with recorded_statements(app) as recorded:
        threads = [threading.Thread(target=request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == [200] * 8
    assert snapshot_reads([statement for statement, _ in recorded]) == 1


@contextmanager
def database_down(app: Flask) -> Iterator[None]:
    """Every statement fails as an unreachable database's do."""

    def fail(*args: object) -> None:
        raise OperationalError("SELECT", {}, Exception("database unavailable"))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


def test_an_outage_serves_the_copy_younger_than_ttl_then_503(app, client, clock):
    add_list(app, 1, {2: 1})
    etag = client.get("/oauth/status/1").headers["ETag"]
    with database_down(app):
        clock.advance(TTL - 1)
        during = client.get("/oauth/status/1")
        assert during.status_code == 200 and during.headers["ETag"] == etag
        clock.advance(2)  # the copy is older than ttl now
        late = client.get("/oauth/status/1")
        assert late.status_code == 503 and late.headers["Retry-After"]
        assert late.get_json()["error"] == "temporarily_unavailable"
        assert late.headers["Cache-Control"] == "no-store"
        assert client.get("/oauth/status").status_code == 503  # nothing cached
        assert client.get("/oauth/status/2").status_code == 503  # unknown: cannot say
    _, claims = fetch(client)
    assert statuses(claims) == {2: 1}


# -- what is no list -----------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/oauth/status/2", "/oauth/status/0", "/oauth/status/-1", "/oauth/status/01",
    "/oauth/status/+1", "/oauth/status/1.0", "/oauth/status/abc", "/oauth/status/%00",
    "/oauth/status/%D9%A1",  # ARABIC-INDIC DIGIT ONE
    f"/oauth/status/{2**31}", f"/oauth/status/{'9' * 400}", "/oauth/status/1/x",
])
def test_anything_but_a_lists_id_is_404_json(app, client, path):
    add_list(app, 1, {})
    response = client.get(path)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_other_methods_and_historical_requests(app, client):
    add_list(app, 1, {})
    assert client.post("/oauth/status/1").status_code == 405
    assert client.delete("/oauth/status").status_code == 405
    # The draft's historical resolution is not offered: 501, as it asks.
    assert client.get("/oauth/status/1?time=1700000000").status_code == 501
    preflight = client.options("/oauth/status/1", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, HEAD"


# -- the aggregation and discovery -----------------------------------------------------------
def test_the_aggregation_lists_every_list(app, client, clock):
    assert client.get("/oauth/status").get_json() == {"status_lists": []}
    for list_id in (1, 2, 3):
        add_list(app, list_id, {})
    clock.advance(1.1)
    response = client.get("/oauth/status")
    assert response.mimetype == "application/json"
    assert response.get_json() == {"status_lists": [f"{ISSUER}/oauth/status/{i}"
                                                     for i in (1, 2, 3)]}
    assert response.headers["Cache-Control"] == f"public, max-age={TTL}"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    cached = client.get("/oauth/status", headers={"If-None-Match": response.headers["ETag"]})
    assert cached.status_code == 304
    for uri in response.get_json()["status_lists"]:
        fetch(client, int(uri.rsplit("/", 1)[1]))


def test_discovery_names_the_aggregation(app, client):
    for path in ("/.well-known/oauth-authorization-server",
                 "/.well-known/openid-configuration"):
        metadata = client.get(path).get_json()
        assert metadata["status_list_aggregation_endpoint"] == f"{ISSUER}/oauth/status"
    assert client.get("/oauth/status").status_code == 200


# -- keys ----------------------------------------------------------------------------------
@pytest.fixture
def own_keys(app, tmp_path: Path) -> KeyStore:
    """This module's app signs with keys in its own directory (the suite's is shared)."""
    svc = app.extensions["authserver"]
    svc.settings = dataclasses.replace(svc.settings, keys_dir=str(tmp_path / "keys"))
    KeyAdmin(tmp_path / "keys").create("RS256", "active")
    svc.keys = KeyStore.from_settings(svc.settings)
    svc.tokens = AccessTokenIssuer(svc.settings, svc.keys)
    return svc.keys


def test_after_a_rotation_the_list_is_signed_by_the_new_active_key(app, client, clock,
                                                                   own_keys):
    add_list(app, 1, {11: 1})
    before, _ = fetch(client)
    old = jwt.get_unverified_header(before.get_data(as_text=True))["kid"]
    rotated, _ = KeyAdmin.of(own_keys).rotate("ES256", force=True)
    own_keys.check_interval = 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=own_keys.policy.prepublish + 1)
    own_keys.clock = lambda: later  # the next key is active now, the old one retired
    assert own_keys.active().kid == rotated.kid != old
    # Within the second of the last version read: signed again, from what it holds.
    after = statements_of(app, lambda: client.get("/oauth/status/1"))
    assert snapshot_reads(after) == 0
    response, claims = fetch(client)
    header = jwt.get_unverified_header(response.get_data(as_text=True))
    assert (header["kid"], header["alg"]) == (rotated.kid, "ES256")
    assert statuses(claims) == {11: 1}
