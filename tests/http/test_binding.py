"""Device binding (docs/design.md, "Device binding"): what each policy lets through.

Every table row signs in from one device context and refreshes from another, over HTTP,
and says whether the refresh must pass. A context is the ``device_id`` (form or
``X-Device-Id``), the ``User-Agent`` and the client address (``REMOTE_ADDR``, or a
trusted proxy's ``X-Forwarded-For``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from authserver.domain import user_agents
from authserver.domain.binding import BindingPolicy, Bound, DeviceContext, mismatches
from authserver.extensions import db
from tests.support.oauth import PASSWORD, assert_oauth_error
from tests.support.rows import events, families
from tests.support.statements import statements_of

IOS_APP = "BankApp/3.2.1 (iPhone; iOS 17.1; Scale/3.00)"
IOS_APP_UPDATED = "BankApp/3.3.0 (iPhone; iOS 17.2; Scale/3.00)"
ANDROID_APP = "BankApp/3.2.1 (Linux; Android 14; Pixel 8)"
OTHER_APP = "Wallet/3.2.1 (iPhone; iOS 17.1)"
FIREFOX_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:120.0) Gecko/20100101 "
               "Firefox/120.0")
FIREFOX_MAC_NEXT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.2; rv:121.0) Gecko/20100101 "
                    "Firefox/121.0")
CHROME_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")
CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36")
CHROME_WINDOWS_NEXT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                       "(KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36")
CHROME_LINUX = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/120.0.0.0 Safari/537.36")
DEVICE_A = "device-A-4f1c2b9e"
DEVICE_B = "device-B-77d03a11"


@dataclass(frozen=True)
class Ctx:
    device_id: str | None = DEVICE_A
    ua: str = IOS_APP
    ip: str = "203.0.113.5"
    device_in_header: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)


def token_request(client, data: dict[str, str], ctx: Ctx):
    data = dict(data)
    headers = {"User-Agent": ctx.ua, **ctx.extra_headers}
    if ctx.device_id is not None:
        if ctx.device_in_header:
            headers["X-Device-Id"] = ctx.device_id
        else:
            data["device_id"] = ctx.device_id
    return client.post("/oauth/token", data=data, headers=headers,
                       environ_base={"REMOTE_ADDR": ctx.ip})


def sign_in(oauth, app_client, ctx: Ctx, username: str = "alice"):
    return token_request(oauth.client, {"grant_type": "password", "username": username,
                                        "password": PASSWORD,
                                        "client_id": app_client.client_id}, ctx)


def refresh(oauth, app_client, token: str, ctx: Ctx):
    return token_request(oauth.client, {"grant_type": "refresh_token", "refresh_token": token,
                                        "client_id": app_client.client_id}, ctx)


# -- the policy tables -----------------------------------------------------------------
# (client policy, sign-in context, refresh context, must the refresh pass?)
A = Ctx()
POLICY_TABLE = {
    # device id (default: must match when one was given at sign-in)
    "device-id-same": ({}, A, A, True),
    "device-id-header-then-form": ({}, Ctx(device_in_header=True), A, True),
    "device-id-other": ({}, A, Ctx(device_id=DEVICE_B), False),
    "device-id-dropped-at-refresh": ({}, A, Ctx(device_id=None), False),
    "device-id-case-differs": ({}, A, Ctx(device_id=DEVICE_A.upper()), False),
    "device-id-none-at-sign-in": ({}, Ctx(device_id=None), Ctx(device_id=DEVICE_B), True),
    "device-id-not-bound": ({"bind_device_id": False}, A, Ctx(device_id=DEVICE_B), True),
    # user-agent family (default on): versions are ignored, app/browser and OS are not
    "ua-same": ({}, A, A, True),
    "ua-app-update": ({}, A, Ctx(ua=IOS_APP_UPDATED), True),
    "ua-browser-update": ({}, Ctx(ua=FIREFOX_MAC), Ctx(ua=FIREFOX_MAC_NEXT), True),
    "ua-chrome-update": ({}, Ctx(ua=CHROME_WINDOWS), Ctx(ua=CHROME_WINDOWS_NEXT), True),
    "ua-other-browser": ({}, Ctx(ua=FIREFOX_MAC), Ctx(ua=CHROME_MAC), False),
    "ua-other-os": ({}, Ctx(ua=CHROME_WINDOWS), Ctx(ua=CHROME_LINUX), False),
    "ua-app-on-other-os": ({}, A, Ctx(ua=ANDROID_APP), False),
    "ua-other-app": ({}, A, Ctx(ua=OTHER_APP), False),
    "ua-curl": ({}, A, Ctx(ua="curl/8.5.0"), False),
    "ua-not-bound": ({"bind_user_agent": False}, Ctx(ua=FIREFOX_MAC), Ctx(ua=CHROME_LINUX),
                     True),
    # IP network (default off)
    "ip-off": ({}, A, Ctx(ip="198.51.100.7"), True),
    "ip-off-v4-to-v6": ({}, A, Ctx(ip="2001:db8::1"), True),
    "ip-exact-same": ({"bind_ip": "exact"}, A, A, True),
    "ip-exact-next-door": ({"bind_ip": "exact"}, A, Ctx(ip="203.0.113.6"), False),
    "ip-exact-v6-same": ({"bind_ip": "exact"}, Ctx(ip="2001:db8::1"),
                         Ctx(ip="2001:0db8:0:0::1"), True),
    "ip-exact-v4-mapped": ({"bind_ip": "exact"}, A, Ctx(ip="::ffff:203.0.113.5"), True),
    "ip-24-same-net": ({"bind_ip": "/24"}, A, Ctx(ip="203.0.113.250"), True),
    "ip-24-other-net": ({"bind_ip": "/24"}, A, Ctx(ip="203.0.114.5"), False),
    "ip-24-v4-mapped": ({"bind_ip": "/24"}, A, Ctx(ip="::ffff:203.0.113.9"), True),
    "ip-16-same-net": ({"bind_ip": "/16"}, A, Ctx(ip="203.0.200.1"), True),
    "ip-16-other-net": ({"bind_ip": "/16"}, A, Ctx(ip="203.1.113.5"), False),
    "ip-64-same-net": ({"bind_ip": "/64"}, Ctx(ip="2001:db8:1:2::1"),
                       Ctx(ip="2001:db8:1:2:ffff:ffff:ffff:ffff"), True),
    "ip-64-other-net": ({"bind_ip": "/64"}, Ctx(ip="2001:db8:1:2::1"),
                        Ctx(ip="2001:db8:1:3::1"), False),
    "ip-64-means-24-for-v4": ({"bind_ip": "/64"}, A, Ctx(ip="203.0.113.77"), True),
    "ip-48-same-net": ({"bind_ip": "/48"}, Ctx(ip="2001:db8:1:2::1"),
                       Ctx(ip="2001:db8:1:ffff::1"), True),
    "ip-48-other-net": ({"bind_ip": "/48"}, Ctx(ip="2001:db8:1:2::1"),
                        Ctx(ip="2001:db8:2::1"), False),
    "ip-48-means-16-for-v4": ({"bind_ip": "/48"}, A, Ctx(ip="203.0.1.1"), True),
    "ip-24-means-64-for-v6": ({"bind_ip": "/24"}, Ctx(ip="2001:db8:1:2::1"),
                              Ctx(ip="2001:db8:1:2::abcd"), True),
    "ip-24-v4-to-v6": ({"bind_ip": "/24"}, A, Ctx(ip="2001:db8::1"), False),
    # everything at once: a stolen token replayed from another phone on another network
    "all-bound-other-device": ({"bind_ip": "/24"}, A,
                               Ctx(device_id=DEVICE_B, ua=ANDROID_APP, ip="198.51.100.7"),
                               False),
    "all-bound-same-device-moved-in-net": ({"bind_ip": "/24"}, A,
                                           Ctx(ua=IOS_APP_UPDATED, ip="203.0.113.99"), True),
}


@pytest.mark.parametrize("case", list(POLICY_TABLE), ids=list(POLICY_TABLE))
def test_policy_table(oauth, app, case):
    policy, at_sign_in, at_refresh, passes = POLICY_TABLE[case]
    oauth.create_user()
    app_client = oauth.first_party_app(**policy)
    signed_in = sign_in(oauth, app_client, at_sign_in)
    assert signed_in.status_code == 200, signed_in.get_json()

    response = refresh(oauth, app_client, signed_in.get_json()["refresh_token"], at_refresh)

    if passes:
        assert response.status_code == 200, response.get_json()
        assert events(app, "binding_mismatch") == []
    else:
        assert_oauth_error(response, "invalid_grant")
        (mismatch,) = events(app, "binding_mismatch")
        assert mismatch.detail["mismatched"], mismatch.detail
        assert families(app)[0].revoke_reason == "binding_mismatch"  # the default: revoke


@pytest.mark.parametrize(("user_agent", "family"), [
    (IOS_APP, "BankApp on iOS"),
    (IOS_APP_UPDATED, "BankApp on iOS"),
    (ANDROID_APP, "BankApp on Android"),
    ("BankApp/1.0 CFNetwork/1410.0.3 Darwin/22.6.0", "BankApp on iOS or macOS"),
    ("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)", "Dalvik on Android"),
    ("okhttp/4.12.0", "okhttp"),
    ("python-requests/2.32.3", "python-requests"),
    (FIREFOX_MAC, "Firefox on macOS"),
    (CHROME_MAC, "Chrome on macOS"),
    (CHROME_WINDOWS, "Chrome on Windows"),
    (CHROME_LINUX, "Chrome on Linux"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", "Edge on Windows"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", "Safari on iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", "Chrome on iOS"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.6099.144 Mobile Safari/537.36", "Chrome on Android"),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36", "Samsung Internet on Android"),
    ("", "Unknown device"),
    (None, "Unknown device"),
    ("\x00" * 5000, "Unknown device"),
])
def test_user_agent_families_ignore_versions(user_agent, family):
    assert user_agents.family(user_agent) == family


@pytest.mark.parametrize(("policy", "presented", "expected"), [
    (BindingPolicy(), DeviceContext("dev-12345", IOS_APP, "1.2.3.4"), []),
    (BindingPolicy(), DeviceContext("dev-99999", IOS_APP, "1.2.3.4"), ["device_id"]),
    (BindingPolicy(), DeviceContext("dev-12345", CHROME_MAC, "1.2.3.4"), ["user_agent"]),
    (BindingPolicy(ip="exact"), DeviceContext("dev-12345", IOS_APP, "1.2.3.5"), ["ip"]),
    (BindingPolicy(ip="exact"), DeviceContext(None, CHROME_MAC, None),
     ["device_id", "user_agent", "ip"]),
    (BindingPolicy(device_id=False, user_agent=False, ip="off"),
     DeviceContext(None, CHROME_MAC, "9.9.9.9"), []),
    (BindingPolicy(ip="/24"), DeviceContext("dev-12345", IOS_APP, "not-an-ip"), ["ip"]),
])
def test_mismatches_name_every_part_that_differs(policy, presented, expected):
    bound = Bound("dev-12345", user_agents.family(IOS_APP), "1.2.3.4", None)
    assert mismatches(policy, bound, presented) == expected


def test_dpop_key_is_checked_whatever_the_policy():
    policy = BindingPolicy(device_id=False, user_agent=False, ip="off")
    bound = Bound(None, None, None, "jkt-of-the-key")
    assert mismatches(policy, bound, DeviceContext(dpop_jkt="jkt-of-the-key")) == []
    assert mismatches(policy, bound, DeviceContext(dpop_jkt="another")) == ["dpop_key"]
    assert mismatches(policy, bound, DeviceContext()) == ["dpop_key"]


# -- what a mismatch does --------------------------------------------------------------
def test_stolen_token_from_another_device_is_refused_audited_and_revokes(oauth, app):
    """A family bound on device A; its refresh token is used on device B."""
    oauth.create_user()
    app_client = oauth.first_party_app()
    device_a = Ctx(ua=IOS_APP, ip="203.0.113.5")
    device_b = Ctx(device_id=DEVICE_B, ua=ANDROID_APP, ip="198.51.100.7")
    pair = sign_in(oauth, app_client, device_a).get_json()
    current = refresh(oauth, app_client, pair["refresh_token"], device_a).get_json()

    stolen = refresh(oauth, app_client, current["refresh_token"], device_b)

    assert_oauth_error(stolen, "invalid_grant")
    (family,) = families(app)
    assert family.revoked_at is not None and family.revoke_reason == "binding_mismatch"
    (mismatch,) = events(app, "binding_mismatch")
    assert mismatch.family_id == family.id and mismatch.client_id == app_client.client_id
    assert mismatch.detail["action"] == "revoke"
    assert mismatch.detail["mismatched"] == ["device_id", "user_agent"]  # IP is off by default
    assert mismatch.detail["bound"] == {"device_id": DEVICE_A,
                                        "user_agent_family": "BankApp on iOS",
                                        "ip": "203.0.113.5", "dpop_jkt": None}
    assert mismatch.detail["presented"] == {"device_id": DEVICE_B,
                                            "user_agent_family": "BankApp on Android",
                                            "ip": "198.51.100.7", "dpop_jkt": None}
    revoked = events(app, "family_revoked")
    assert [e.detail["cause"] for e in revoked] == ["binding_mismatch"]
    # Device A's next refresh is refused too: the session is over, the user signs in again.
    assert_oauth_error(refresh(oauth, app_client, current["refresh_token"], device_a),
                       "invalid_grant")
    assert sign_in(oauth, app_client, device_a).status_code == 200


def test_reject_refuses_but_keeps_the_session(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app(on_binding_mismatch="reject")
    pair = sign_in(oauth, app_client, A).get_json()

    stolen = refresh(oauth, app_client, pair["refresh_token"], Ctx(device_id=DEVICE_B))

    assert_oauth_error(stolen, "invalid_grant")
    assert families(app)[0].revoked_at is None
    (mismatch,) = events(app, "binding_mismatch")
    assert mismatch.detail["action"] == "reject"
    assert mismatch.detail["presented"]["device_id"] == DEVICE_B
    assert refresh(oauth, app_client, pair["refresh_token"], A).status_code == 200


def test_grace_retry_only_from_the_same_device(oauth, app):
    """docs/design.md, "Rotation" 2-3: an identical retry from the same binding; from any other,
    reuse (the family is revoked and the reuse audited with both contexts)."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    pair = sign_in(oauth, app_client, A).get_json()
    rotated = refresh(oauth, app_client, pair["refresh_token"], A)
    assert rotated.status_code == 200

    retry = refresh(oauth, app_client, pair["refresh_token"], A)
    assert retry.status_code == 200 and retry.get_json() == rotated.get_json()

    from_b = refresh(oauth, app_client, pair["refresh_token"], Ctx(device_id=DEVICE_B))
    assert_oauth_error(from_b, "invalid_grant")
    assert families(app)[0].revoke_reason == "reuse_detected"
    (reuse,) = events(app, "refresh_token_reuse")
    assert reuse.detail["mismatched"] == ["device_id"]
    assert reuse.detail["bound"]["device_id"] == DEVICE_A
    assert reuse.detail["presented"]["device_id"] == DEVICE_B
    assert_oauth_error(refresh(oauth, app_client, rotated.get_json()["refresh_token"], A),
                       "invalid_grant")


# -- device ids at sign-in -------------------------------------------------------------
@pytest.mark.parametrize("device_id", [
    "short", "x" * 129, "has space-12", "tab\tinside-12", "caf\u00e9-device-1",
], ids=["too-short", "too-long", "space", "tab", "non-ascii"])
def test_bad_device_ids_are_refused(oauth, app, device_id):
    oauth.create_user()
    app_client = oauth.first_party_app()
    response = sign_in(oauth, app_client, Ctx(device_id=device_id))
    body = assert_oauth_error(response, "invalid_request")
    assert "device_id" in body["error_description"]
    assert families(app) == []


@pytest.mark.parametrize("device_id", ["12345678", "x" * 128, "A1:b2_C3-d4.e5~!#$%&'()*+,/;=?@[]"])
def test_device_id_limits(oauth, device_id):
    oauth.create_user()
    app_client = oauth.first_party_app()
    assert sign_in(oauth, app_client, Ctx(device_id=device_id)).status_code == 200


def test_an_empty_device_id_counts_as_omitted(oauth, app):
    """RFC 6749 §3.2: a parameter sent without a value is treated as omitted."""
    oauth.create_user()
    app_client = oauth.first_party_app(require_device_id=True)
    body = assert_oauth_error(sign_in(oauth, app_client, Ctx(device_id="")), "invalid_request")
    assert "must send a device_id" in body["error_description"]


def test_form_and_header_device_ids_must_agree(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app()
    ctx = Ctx(extra_headers={"X-Device-Id": DEVICE_B})
    body = assert_oauth_error(sign_in(oauth, app_client, ctx), "invalid_request")
    assert "differ" in body["error_description"]


def test_a_client_can_require_a_device_id_at_sign_in(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app(require_device_id=True)
    body = assert_oauth_error(sign_in(oauth, app_client, Ctx(device_id=None)), "invalid_request")
    assert "device_id" in body["error_description"]
    assert families(app) == []
    assert events(app, "sign_in_succeeded") == []
    assert sign_in(oauth, app_client, Ctx(device_in_header=True)).status_code == 200
    assert families(app)[0].device_id == DEVICE_A


# -- one live session per device -------------------------------------------------------
def test_a_second_sign_in_from_the_same_device_replaces_the_first(oauth, app):
    oauth.create_user()
    oauth.create_user("bob")
    app_client = oauth.first_party_app()
    other_app = oauth.first_party_app(name="Other app")
    first = sign_in(oauth, app_client, A).get_json()
    on_b = sign_in(oauth, app_client, Ctx(device_id=DEVICE_B)).get_json()
    bob = sign_in(oauth, app_client, A, username="bob").get_json()
    other = sign_in(oauth, other_app, A).get_json()

    second = sign_in(oauth, app_client, A).get_json()

    assert_oauth_error(refresh(oauth, app_client, first["refresh_token"], A), "invalid_grant")
    replaced = [f for f in families(app) if f.revoked_at is not None]
    assert [f.revoke_reason for f in replaced] == ["replaced_by_new_sign_in"]
    # Another device, another user, another client: not the same device session.
    assert refresh(oauth, app_client, second["refresh_token"], A).status_code == 200
    assert refresh(oauth, app_client, on_b["refresh_token"], Ctx(device_id=DEVICE_B)
                   ).status_code == 200
    assert refresh(oauth, app_client, bob["refresh_token"], A).status_code == 200
    assert refresh(oauth, other_app, other["refresh_token"], A).status_code == 200


def test_sign_ins_without_a_device_id_do_not_replace_each_other(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app()
    sign_in(oauth, app_client, Ctx(device_id=None))
    sign_in(oauth, app_client, Ctx(device_id=None))
    assert [f.revoked_at for f in families(app)] == [None, None]


@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": 10}], ids=["pool-10"])
def test_concurrent_sign_ins_from_one_device_leave_one_live_session(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app()
    threads = 6
    barrier = threading.Barrier(threads)

    def one(_):
        client = app.test_client()
        barrier.wait()
        return token_request(client, {"grant_type": "password", "username": "alice",
                                      "password": PASSWORD, "client_id": app_client.client_id},
                             A).status_code

    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(one, range(threads)))
    assert statuses == [200] * threads
    live = [f for f in families(app) if f.revoked_at is None]
    assert len(live) == 1, [(f.id, f.revoke_reason) for f in families(app)]


# -- client address: trusted proxies ---------------------------------------------------
@pytest.mark.parametrize(("settings_overrides", "forwarded", "expected"), [
    ({}, "198.51.100.7", "10.0.0.2"),
    ({"trusted_proxies": 1}, "198.51.100.7", "198.51.100.7"),
    ({"trusted_proxies": 1}, "6.6.6.6, 198.51.100.7", "198.51.100.7"),
    ({"trusted_proxies": 2}, "6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
    ({"trusted_proxies": 1}, "not-an-address", None),
    ({"trusted_proxies": 1}, "::ffff:198.51.100.7", "198.51.100.7"),
], ids=["no-proxy-ignores-xff", "one-proxy", "one-proxy-spoofed-left", "two-proxies",
        "junk-from-proxy", "v4-mapped"])
def test_client_ip_honours_only_the_trusted_proxies(oauth, app, forwarded, expected):
    oauth.create_user()
    app_client = oauth.first_party_app()
    ctx = Ctx(ip="10.0.0.2", extra_headers={"X-Forwarded-For": forwarded})
    response = sign_in(oauth, app_client, ctx)
    assert response.status_code == 200, response.get_json()
    assert families(app)[0].ip == expected


# -- first seen, last seen, last IP ----------------------------------------------------
def test_sessions_show_first_seen_last_seen_and_last_ip(oauth, app, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read account")
    signed_in_at = clock.now
    pair = sign_in(oauth, app_client, Ctx(ip="203.0.113.5")).get_json()
    clock.advance(3600)
    later = refresh(oauth, app_client, pair["refresh_token"], Ctx(ip="198.51.100.7")).get_json()

    listed = oauth.client.get("/account/api/sessions",
                              headers={"Authorization": f"Bearer {later['access_token']}"})
    assert listed.status_code == 200, listed.get_json()
    (session,) = listed.get_json()["sessions"]
    assert session["device"] == "BankApp on iOS"
    assert session["created_at"] == signed_in_at.isoformat()
    assert session["last_used_at"] == clock.now.isoformat()
    assert session["last_ip"] == "198.51.100.7"
    assert families(app)[0].ip == "203.0.113.5", "the sign-in address stays recorded"


def test_binding_checks_keep_the_refresh_at_three_statements(oauth, app):
    """Last seen / last IP come from the newest token row, which the refresh inserts anyway:
    binding adds no statement to the hot path (docs/design.md, "Performance budget")."""
    oauth.create_user()
    app_client = oauth.first_party_app(bind_ip="/24")
    app.extensions["authserver"].clients.ttl = 60
    token = sign_in(oauth, app_client, A).get_json()["refresh_token"]
    token = refresh(oauth, app_client, token, A).get_json()["refresh_token"]
    statements = statements_of(app, lambda: refresh(oauth, app_client, token, A))
    assert len(statements) <= 3, statements


# -- the CLI ---------------------------------------------------------------------------
def test_cli_sets_the_binding_policy(run, oauth, app):
    import json

    created = run("clients", "create", "--name", "Bank app", "--public", "--first-party",
                  "--scope", "read", "--bind-ip", "/24", "--no-bind-user-agent",
                  "--require-device-id", "--on-binding-mismatch", "reject", "--json")
    assert created.exit_code == 0, created.output
    record = json.loads(created.output)
    assert {k: record[k] for k in ("bind_device_id", "bind_user_agent", "bind_ip",
                                   "require_device_id", "on_binding_mismatch", "require_dpop")
            } == {"bind_device_id": True, "bind_user_agent": False, "bind_ip": "/24",
                  "require_device_id": True, "on_binding_mismatch": "reject",
                  "require_dpop": False}

    updated = run("clients", "update", record["client_id"], "--bind-ip", "exact",
                  "--on-binding-mismatch", "revoke", "--require-dpop", "--json")
    assert updated.exit_code == 0, updated.output
    changed = json.loads(updated.output)
    assert changed["bind_ip"] == "exact" and changed["on_binding_mismatch"] == "revoke"
    assert changed["require_dpop"] is True
    assert changed["bind_user_agent"] is False and changed["require_device_id"] is True

    # The policy is what the token endpoint enforces.
    oauth.create_user()
    with app.app_context():
        from authserver.domain.clients import get_client

        app_client = get_client(db.session, record["client_id"])
    response = sign_in(oauth, app_client, A)
    assert_oauth_error(response, "invalid_dpop_proof")


@pytest.mark.parametrize("args", [
    ["--bind-ip", "/8"], ["--on-binding-mismatch", "ignore"],
], ids=["bad-ip-policy", "bad-action"])
def test_cli_refuses_unknown_binding_values(run, args):
    result = run("clients", "create", "--name", "x", "--public", "--first-party", *args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output
