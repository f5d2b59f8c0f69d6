"""Authorization codes (RFC 6749 §4.1.2, §4.1.3): 256 bits, digest only, 60 s, used once.

A code is consumed with a compare-and-set (``UPDATE ... WHERE used_at IS NULL``), so two
concurrent exchanges cannot both succeed. A code presented again revokes the family that
was issued from it (§4.1.2: "SHOULD revoke ... all tokens previously issued").
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ..storage.models import AuthorizationCode, LoginSession, User
from . import audit, consents, pkce, refresh_families, scopes
from . import credentials as creds
from .authorization import AuthorizationRequest, issues_refresh_token
from .binding import DeviceContext
from .clients import ClientRecord
from .clock import Clock, seconds, utcnow
from .errors import DomainError

CODE_TTL = 60
CODE_REPLAYED = "authorization_code_replay"


class InvalidAuthorizationCode(DomainError):
    """RFC 6749 invalid_grant: unknown, expired, used, or not matching the request."""


def issue(
    session: Session,
    request: AuthorizationRequest,
    *,
    user_id: int,
    login_session_id: str | None,
    auth_time: Any,
    grant_consent: bool = False,
    clock: Clock = utcnow,
) -> str:
    """Store a new code's digest; return the code. With ``grant_consent`` the user's
    consent to the request's scope is remembered in the same transaction. Commits."""
    if grant_consent:
        consents.grant(session, user_id, request.client.client_id, request.scope)
    now = clock()
    code = secrets.token_urlsafe(32)
    session.execute(
        insert(AuthorizationCode).values(
            code_digest=creds.digest(code),
            client_id=request.client.client_id,
            user_id=user_id,
            login_session_id=login_session_id,
            redirect_uri=request.redirect_uri,
            redirect_uri_given=request.redirect_uri_given,
            scope=scopes.render(request.scope),
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            auth_time=auth_time,
            created_at=now,
            expires_at=now + seconds(CODE_TTL),
        )
    )
    session.commit()
    return code


def redeem(
    session: Session,
    *,
    code: str,
    client: ClientRecord,
    redirect_uri: str | None,
    code_verifier: str | None,
    issue_access: refresh_families.IssueAccessToken,
    context: DeviceContext = refresh_families.NO_CONTEXT,
    clock: Clock = utcnow,
) -> dict[str, Any]:
    """Exchange a code for tokens (a new family); return the token response body. Commits
    (a failed exchange too: the code is burnt)."""
    now = clock()
    digest = creds.digest(code)
    row = session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_digest == digest,
               AuthorizationCode.client_id == client.client_id,
               AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
        .returning(AuthorizationCode)
    ).scalar_one_or_none()
    if row is None:
        _handle_replay(session, digest, client, clock)
        raise InvalidAuthorizationCode("the authorization code is invalid or was already used")

    problem = _mismatch(row, redirect_uri, code_verifier, now)
    if problem:
        session.commit()  # the code is burnt: a failed exchange cannot be retried
        raise InvalidAuthorizationCode(problem)
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        session.commit()
        raise InvalidAuthorizationCode("the user is no longer active")
    if row.login_session_id is not None and _signed_out(session, row.login_session_id):
        session.commit()  # the user signed out before the client came back for the tokens
        raise InvalidAuthorizationCode("the sign-in this code came from has ended")

    family_id = creds.new_family_id()
    row.family_id = family_id
    scope = scopes.parse(row.scope)
    return refresh_families.start_family(
        session,
        client=client,
        user=user,
        scope=scope,
        grant_type="authorization_code",
        issue=issue_access,
        auth_time=row.auth_time,
        with_refresh_token=issues_refresh_token(client, scope),
        family_id=family_id,
        login_session_id=row.login_session_id,
        nonce=row.nonce,
        context=context,
        bind_dpop=client.public,  # RFC 9449 §5
        clock=lambda: now,
    )


def _mismatch(row: AuthorizationCode, redirect_uri: str | None, verifier: str | None,
              now: Any) -> str | None:
    if row.expires_at <= now:
        return "the authorization code has expired"
    # RFC 6749 §4.1.3: required and identical when the authorization request had one.
    if (row.redirect_uri_given or redirect_uri is not None) and redirect_uri != row.redirect_uri:
        return "redirect_uri does not match the authorization request"
    if row.code_challenge is not None:
        if not pkce.verify(verifier, row.code_challenge):  # RFC 7636 §4.6
            return "code_verifier does not match the code_challenge"
    elif verifier is not None:
        return "code_verifier sent for a request without code_challenge"
    return None


def _signed_out(session: Session, login_session_id: str) -> bool:
    ended = session.execute(
        select(LoginSession.ended_at).where(LoginSession.id == login_session_id)
    ).one_or_none()
    return ended is None or ended.ended_at is not None


def _handle_replay(session: Session, digest: str, client: ClientRecord, clock: Clock) -> None:
    """A used code came back from its own client: revoke what it issued (§4.1.2)."""
    used = session.execute(
        select(AuthorizationCode.family_id, AuthorizationCode.user_id,
               AuthorizationCode.used_at)
        .where(AuthorizationCode.code_digest == digest,
               AuthorizationCode.client_id == client.client_id)
    ).one_or_none()
    # End the transaction first: on PostgreSQL a failed compare-and-set keeps the row lock.
    session.rollback()
    if used is None or used.used_at is None:
        return
    now = clock()
    if used.family_id is not None:
        refresh_families.revoke_family(session, used.family_id, reason="code_replay", now=now)
    audit.record(session, CODE_REPLAYED, user_id=used.user_id, client_id=client.client_id,
                 family_id=used.family_id, now=now)
    session.commit()
