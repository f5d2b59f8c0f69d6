"""Token-endpoint grants. Each is a thin adapter: Authlib parses, the domain decides."""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from flask import g
from flask import request as http_request
from sqlalchemy.exc import DBAPIError

from ..domain import (
    attempt_limits,
    codes,
    passwords,
    refresh_families,
    scopes,
    token_status,
    users,
)
from ..domain.binding import DeviceContext, normalise_ip, valid_device_id
from ..domain.clients import ClientRecord
from ..domain.errors import InvalidRefreshToken, ScopeNotGranted
from ..extensions import db
from ..services import services
from . import rate_limits
from .errors import InvalidDPoPProofError, oauth_error

log = logging.getLogger(__name__)
Response = tuple[int, dict[str, Any], list[tuple[str, str]]]
TOKEN_RESPONSE_HEADER = grants.BaseGrant.TOKEN_RESPONSE_HEADER  # JSON, no-store
CONCURRENCY_SQLSTATES = ("40001", "40P01")  # serialization_failure, deadlock_detected


def _client(grant: grants.BaseGrant, grant_type: str) -> ClientRecord:
    client: ClientRecord = grant.authenticate_token_endpoint_client()
    if not client.check_grant_type(grant_type):
        raise oauth_error(UnauthorizedClientError,
                          f"the client may not use grant_type {grant_type}")
    return client


def _scope_for(client: ClientRecord, requested: str | None) -> list[str]:
    """The scope to grant: what was asked, within what the client is registered for."""
    try:
        return scopes.narrow(requested, list(client.scope))
    except ScopeNotGranted as exc:
        raise oauth_error(InvalidScopeError, str(exc)) from None


def _device_context(client: ClientRecord, signing_in: bool) -> DeviceContext:
    """The requesting device of the current Flask request (``device_context``)."""
    proof = g.get("dpop")
    return device_context(
        client, signing_in=signing_in, in_form=http_request.form.get("device_id"),
        in_header=http_request.headers.get("X-Device-Id"),
        user_agent=http_request.user_agent.string, remote_addr=http_request.remote_addr,
        dpop_jkt=proof.jkt if proof else None)


def device_context(client: ClientRecord, *, signing_in: bool, in_form: str | None,
                   in_header: str | None, user_agent: str, remote_addr: str | None,
                   dpop_jkt: str | None) -> DeviceContext:
    """The requesting device: ``device_id`` (form or ``X-Device-Id``), user agent, client IP
    (``remote_addr``: ProxyFix applies only the configured trusted hops), DPoP key."""
    in_form = in_form or None  # §3.2: empty = omitted
    in_header = in_header or None
    if in_form is not None and in_header is not None and in_form != in_header:
        raise oauth_error(InvalidRequestError, "device_id and X-Device-Id differ")
    device_id = in_form if in_form is not None else in_header
    if device_id is not None and not valid_device_id(device_id):
        raise oauth_error(InvalidRequestError,
                          "device_id must be 8 to 128 printable characters without spaces")
    if signing_in and device_id is None and client.binding.require_device_id:
        raise oauth_error(InvalidRequestError, "this client must send a device_id")
    if dpop_jkt is None and client.binding.require_dpop:
        raise oauth_error(InvalidDPoPProofError, "this client must send a DPoP proof")
    return DeviceContext(device_id=device_id, user_agent=_printable(user_agent),
                         ip=normalise_ip(remote_addr), dpop_jkt=dpop_jkt)


def _printable(header: str) -> str | None:
    """A header value as text we store: without control characters (PostgreSQL refuses
    NUL in any text column, and the others only make audit records unreadable)."""
    return "".join(ch for ch in header if ch >= " " and ch != "\x7f") or None


def _required(grant: grants.BaseGrant, name: str) -> str:
    value = grant.request.form.get(name)
    if not value:
        raise oauth_error(InvalidRequestError, f"missing {name!r} parameter")
    return value


def _unicode_no_crlf(value: str) -> bool:
    """RFC 6749 Appendix A.3/A.4: username and password are *UNICODECHARNOCRLF
    (%x09 / %x20-7E / %x80-D7FF / %xE000-FFFD / %x10000-10FFFF)."""
    return all(
        ch == "\t" or " " <= ch <= "\x7e" or "\x80" <= ch <= "\ud7ff"
        or "\ue000" <= ch <= "\ufffd" or ch >= "\U00010000"
        for ch in value
    )


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    """RFC 6749 §4.3, for first-party clients only (RFC 9700 §2.4 discourages it otherwise)."""

    class Busy(OAuth2Error):
        """503: the check would wait too long for this process's argon2 (``passwords``)."""

        error = "temporarily_unavailable"
        status_code = 503

        def get_headers(self) -> list[tuple[str, str]]:
            return [*super().get_headers(), ("Retry-After", "1")]

    def validate_token_request(self) -> None:
        client = _client(self, self.GRANT_TYPE)
        if not client.first_party:
            raise oauth_error(UnauthorizedClientError,
                              "the password grant is only for first-party clients")
        username = _required(self, "username")
        password = _required(self, "password")
        if not (_unicode_no_crlf(username) and _unicode_no_crlf(password)):
            raise oauth_error(InvalidRequestError,
                              "username and password may not contain control characters")
        self.request.client = client
        self.granted_scope = _scope_for(client, self.request.form.get("scope"))
        self.context = _device_context(client, signing_in=True)
        self.credentials = (username, password)

    def create_token_response(self) -> Response:
        client: ClientRecord = self.request.client
        username, password = self.credentials
        # No transaction is open yet (client and DPoP checks read in autocommit mode), and
        # none is while argon2 runs; the writes that follow are one short transaction.
        try:
            body = users.password_grant(
                db.session(), username, password,
                client=client,
                scope=self.granted_scope,
                context=self.context,
                issue=services().tokens.for_grant,
                with_refresh_token=client.check_grant_type("refresh_token"),
                bind_dpop=client.public,  # RFC 9449 §5: public clients' refresh tokens are bound
                clock=services().clock,
                guard=rate_limits.guard(),
            )
        except passwords.Busy:
            raise self.Busy(description="too many sign-ins at once; try again shortly"
                            ) from None
        except attempt_limits.Limited as limited:  # recorded by the domain
            raise rate_limits.RateLimited(limited.retry_after) from None
        except attempt_limits.LimitsUnavailable as exc:
            log.error("password grant: brute-force limits unavailable (%s)", exc)
            raise rate_limits.SignInUnavailable() from None
        if body is None:
            raise oauth_error(InvalidGrantError, "invalid username or password")
        return 200, body, self.TOKEN_RESPONSE_HEADER


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 §4.4: confidential clients only, access token only (§4.4.3)."""

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        self.granted_scope = check_client_credentials(client, self.request.form.get("scope"))
        self.request.client = client
        self.context = _device_context(client, signing_in=False)

    def create_token_response(self) -> Response:
        body = client_credentials_body(self.request.client, self.granted_scope, self.context)
        return 200, body, self.TOKEN_RESPONSE_HEADER


def check_client_credentials(client: ClientRecord, requested_scope: str | None) -> list[str]:
    """What ``client_credentials`` checks of an authenticated client; the scope to grant."""
    if not client.check_grant_type(ClientCredentialsGrant.GRANT_TYPE):
        raise oauth_error(UnauthorizedClientError,
                          "the client may not use grant_type client_credentials")
    if client.public:
        raise oauth_error(UnauthorizedClientError,
                          "public clients may not use client_credentials")
    return _scope_for(client, requested_scope)


def client_credentials_body(client: ClientRecord, scope: list[str],
                            context: DeviceContext) -> dict[str, Any]:
    """The token response of ``client_credentials``: an access token, no refresh token.

    The token carries the client's own status-list entry, so disabling the client reaches
    every API (docs/design.md, "Revocation that reaches APIs"). A client registered before
    status lists gets its entry at its first such grant (a short write of its own)."""
    status = client.status
    if status is None:
        status = token_status.ensure_client_entry(db.session(), client.client_id,
                                                  services().clock())
        services().clients.forget([client.client_id])
    access = services().tokens.issue(client=client, subject=client.client_id,
                                     issued_at=services().clock(), scope=scope,
                                     jkt=context.dpop_jkt, status=status)
    return {**access, "scope": scopes.render(scope)}


def refresh_token_grant(client: ClientRecord, in_cookie: str | None = None) -> Response:
    """RFC 6749 §6 for the current Flask request (``check_refresh`` then ``rotate``);
    ``in_cookie`` is a cookie-delivery client's token (``refresh_cookie``)."""
    form = http_request.form
    presented = check_refresh(client, form.get("refresh_token"), in_cookie)
    body = rotate(client, presented, form.get("scope"), _device_context(client, signing_in=False))
    return 200, body, list(TOKEN_RESPONSE_HEADER)


def check_refresh(client: ClientRecord, in_body: str | None, in_cookie: str | None = None
                  ) -> str:
    """What the refresh grant checks before it looks at the token; the presented token.

    A cookie-delivery client's token comes only from its cookie: one in the body has passed
    through JavaScript, which that registration promises never happens
    (docs/design.md, "Browser apps")."""
    if not client.check_grant_type("refresh_token"):
        raise oauth_error(UnauthorizedClientError,
                          "the client may not use grant_type refresh_token")
    if client.cookie_delivery:
        if in_body:
            raise oauth_error(InvalidRequestError, "this client's refresh token travels only "
                              "in its cookie: send no 'refresh_token' parameter")
        if not in_cookie:
            raise oauth_error(InvalidRequestError,
                              "no refresh token cookie for this client: sign in again")
        return in_cookie
    if not in_body:
        raise oauth_error(InvalidRequestError, "missing 'refresh_token' parameter")
    return in_body


def rotate(client: ClientRecord, presented: str, requested_scope: str | None,
           context: DeviceContext) -> dict[str, Any]:
    """RFC 6749 §6 with rotation and reuse detection (``domain.refresh_families``): the
    token response body, or the OAuth error the outcome maps to.

    The token endpoint runs the refresh grant without Authlib's request wrapper and grant
    dispatch, which cost more than the rest of the refresh; the checks and errors are those
    of the other grants (tests/http/test_token_errors.py holds both to one table).
    """
    try:
        return refresh_families.rotate(
            db.session(),
            presented=presented,
            client=client,
            requested_scope=requested_scope,
            issue=services().tokens.for_grant,
            context=context,
            clock=services().clock,
        )
    except InvalidRefreshToken as exc:
        db.session.rollback()
        raise oauth_error(InvalidGrantError, str(exc)) from None
    except ScopeNotGranted as exc:
        db.session.rollback()
        raise oauth_error(InvalidScopeError, str(exc)) from None
    except DBAPIError as exc:
        # Under REPEATABLE READ / SERIALIZABLE a lost race surfaces as a serialization
        # failure: the token was used concurrently, so this request must not succeed.
        db.session.rollback()
        if getattr(exc.orig, "sqlstate", None) in CONCURRENCY_SQLSTATES:
            raise oauth_error(InvalidGrantError, "the refresh token was used concurrently"
                              ) from None
        raise


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """RFC 6749 §4.1.3 with PKCE (RFC 7636): the code is consumed atomically (``domain.codes``)."""

    def validate_token_request(self) -> None:
        self.request.client = _client(self, self.GRANT_TYPE)
        self.code = _required(self, "code")
        self.context = _device_context(self.request.client, signing_in=True)

    def create_token_response(self) -> Response:
        form = self.request.form
        try:
            body = codes.redeem(
                db.session(),
                code=self.code,
                client=self.request.client,
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
                issue_access=services().tokens.for_grant,
                context=self.context,
                clock=services().clock,
            )
        except codes.InvalidAuthorizationCode as exc:
            db.session.rollback()
            raise oauth_error(InvalidGrantError, str(exc)) from None
        except DBAPIError as exc:
            # A lost race under REPEATABLE READ / SERIALIZABLE: the code was redeemed
            # concurrently (RFC 6749 §4.1.2: used once), never a 500.
            db.session.rollback()
            if getattr(exc.orig, "sqlstate", None) in CONCURRENCY_SQLSTATES:
                raise oauth_error(InvalidGrantError,
                                  "the authorization code was used concurrently") from None
            raise
        return 200, body, self.TOKEN_RESPONSE_HEADER
