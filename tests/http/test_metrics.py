"""``/metrics`` (docs/design.md, "Health and metrics"): published only with the metrics
token, and counting what operators alert on: token outcomes, rotations, grace retries, reuse,
sign-ins, DPoP failures, revocations by cause, request durations by endpoint, the key's age
and the logout outbox's backlog. The counters are per process (they outlive one test's app),
so every check compares a scrape before with one after."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authserver.domain import events
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TOKEN = "metrics-token-0123456789-abcdefghijklmnop"


@pytest.fixture
def settings_overrides(request):
    return getattr(request, "param", {"metrics_token": TOKEN})


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "text/plain"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.mark.parametrize("settings_overrides", [{}], indirect=True)
def test_metrics_do_not_exist_without_the_token_setting(client):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    unknown = client.get("/no-such-path")
    assert response.status_code == 404 == unknown.status_code
    assert response.get_data() == unknown.get_data()


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-token-0123456789-abcdefghijklmnop", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
    "Bearer ", f"bearer  {TOKEN[:-1]}",
])
def test_metrics_need_the_token(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="metrics"')
    assert response.headers["Cache-Control"] == "no-store"
    assert "authserver_" not in response.get_data(as_text=True)


def test_a_session_is_counted(oauth, client):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    before = scrape(client)

    first = oauth.login_pair(app_client)
    second = oauth.refresh(app_client, first["refresh_token"])  # the fast path
    assert second.status_code == 200
    reused = oauth.refresh(app_client, first["refresh_token"])  # reuse: family revoked
    assert reused.status_code == 400
    wrong = oauth.password_login(app_client, password=PASSWORD + "x")
    assert wrong.status_code == 400
    assert oauth.token({"grant_type": "urn:made-up"}).status_code == 400
    client.get("/healthz")
    client.get("/no/such/thing")
    after = scrape(client)

    tokens = "authserver_token_requests_total"
    assert delta(before, after, tokens, grant_type="password", outcome="ok") == 1
    assert delta(before, after, tokens, grant_type="refresh_token", outcome="ok") == 1
    assert delta(before, after, tokens, grant_type="refresh_token", outcome="invalid_grant") == 1
    assert delta(before, after, tokens, grant_type="password", outcome="invalid_grant") == 1
    assert delta(before, after, tokens, grant_type="other",
                 outcome="unsupported_grant_type") == 1
    assert delta(before, after, "authserver_refresh_rotations_total") == 1
    assert delta(before, after, "authserver_refresh_reuse_detections_total") == 1
    assert delta(before, after, "authserver_family_revocations_total",
                 cause="reuse_detected") == 1
    assert delta(before, after, "authserver_sign_ins_total", outcome="succeeded") == 1
    assert delta(before, after, "authserver_sign_ins_total", outcome="failed") == 1

    durations = "authserver_request_duration_seconds_count"
    assert delta(before, after, durations, endpoint="token.token") == 5
    assert delta(before, after, durations, endpoint="health.healthz") == 1
    assert delta(before, after, durations, endpoint="other") == 1
    assert not any("no/such" in str(labels) for _, labels in after)  # never a raw path
    assert after[("authserver_signing_keys", (("state", "active"),))] == 1
    assert after[("authserver_active_key_age_seconds", ())] >= 0
    assert after[("authserver_logout_outbox_backlog", ())] == 0


def test_grace_retries_and_dpop_failures_are_counted(oauth, client):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    pair = oauth.login_pair(app_client)
    before = scrape(client)
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200  # a retry
    refused = oauth.token({"grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
                           "client_id": app_client.client_id}, {"DPoP": "not.a.proof"})
    assert refused.status_code == 400
    after = scrape(client)
    assert delta(before, after, "authserver_refresh_grace_retries_total") == 1
    assert delta(before, after, "authserver_refresh_rotations_total") == 1
    assert delta(before, after, "authserver_dpop_failures_total", error="invalid_dpop_proof") == 1
    assert delta(before, after, "authserver_token_requests_total", grant_type="refresh_token",
                 outcome="invalid_dpop_proof") == 1


def test_labels_fed_by_events_stay_bounded(client):
    events.emit(events.TOKEN_REQUEST, grant_type="x" * 300, outcome="Not A Code\n")
    for n in range(100):
        events.emit(events.RATE_LIMITED, scope="address", endpoint=f"login-{n}")
    after = scrape(client)
    assert ("authserver_token_requests_total",
            (("grant_type", "other"), ("outcome", "other"))) in after
    limited = [labels for name, labels in after if name == "authserver_rate_limited_requests_total"]
    assert len(limited) <= 64 + 1
