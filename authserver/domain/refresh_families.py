"""Refresh-token families: the only module that changes a family's state.

A family is one sign-in on one device (its id is the ``sid`` claim). Each refresh token
descends from the family's first token. The rules (docs/design.md, "Rotation"):

1. A token is exchanged at most once. The exchange is a compare-and-set
   (``UPDATE ... WHERE rotated_at IS NULL AND revoked_at IS NULL``) atomic with the
   insert of the child (``storage.refresh_store``). On PostgreSQL the loser blocks on the
   row lock and then matches no row; on SQLite writers queue on the writer lock and
   ``BEGIN IMMEDIATE`` (``storage.engine``). Two rotations of one token cannot both commit.
2. A rotated token presented again inside the client's grace window gets the identical
   response, opened from the sealed copy (``retry_seal``).
3. Otherwise a rotated token coming back is reuse: the whole family is revoked, an audit
   event written and committed, and the caller gets ``RefreshTokenReused``.
4. Unknown, expired, revoked, or another client's tokens: ``InvalidRefreshToken``, and
   nothing changes.

The hot path (a successful rotation) reads in autocommit mode, signs holding no lock, then
writes: two statements on PostgreSQL (the lookup; one statement that claims and inserts),
three on SQLite (the lookup; the UPDATE and the INSERT inside ``BEGIN IMMEDIATE``).

Here: starting a family, rotating (with the grace retry, reuse detection and the device
binding checks) and revoking a family. ``start_family`` and ``rotate`` are each one unit of
work and commit (a revocation decided on an error path too, before the error is raised);
``revoke_family`` joins the caller's transaction (docs/design.md, "Transactions").
Read-only lookups are :mod:`.refresh_lookup`; the cleanup of expired sealed responses is
:mod:`.retry_sweeper`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..storage import engine as storage_engine
from ..storage import refresh_store
from ..storage.models import RefreshToken, TokenFamily, User
from . import audit, binding, events, logout_outbox, retry_seal, scopes, token_status
from . import credentials as creds
from .binding import Bound, DeviceContext
from .clients import ClientRecord
from .clock import Clock, seconds, utcnow
from .errors import InvalidRefreshToken, RefreshTokenReused, ScopeNotGranted
from .refresh_lookup import autocommit_connection, expired

NO_CONTEXT = DeviceContext()


class BindingMismatch(InvalidRefreshToken):
    """The refresh came from another device context than the family is bound to."""


@dataclass(frozen=True)
class Grant:
    """What an access token is issued for: passed to the caller's ``issue`` function."""

    client: ClientRecord
    subject: str
    user_id: int
    family_id: str
    scope: list[str]
    auth_time: dt.datetime
    issued_at: dt.datetime
    nonce: str | None = None  # OIDC: only for the ID token of the authentication response
    jkt: str | None = None  # DPoP key thumbprint the access token is bound to (cnf.jkt)
    # The family's Token Status List entry (docs/design.md, "Revocation that reaches APIs");
    # None for a family older than status lists: its tokens carry no ``status`` claim.
    status: token_status.Entry | None = None


# issue(grant) -> the access-token part of the response: access_token, token_type, expires_in
IssueAccessToken = Callable[[Grant], dict[str, Any]]


def _expiry(now: dt.datetime, ttl: int, cap: dt.datetime | None) -> dt.datetime | None:
    """``now + ttl`` (None when ttl is 0: no limit), never later than ``cap``."""
    candidate = now + seconds(ttl) if ttl > 0 else None
    if cap is None:
        return candidate
    return cap if candidate is None or candidate > cap else candidate



def _response(access: dict[str, Any], refresh_token: str | None, scope: list[str]) -> dict:
    body = dict(access)
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    body["scope"] = scopes.render(scope)
    return body


def start_family(
    session: Session,
    *,
    client: ClientRecord,
    user: User,
    scope: list[str],
    grant_type: str,
    issue: IssueAccessToken,
    auth_time: dt.datetime | None = None,
    with_refresh_token: bool = True,
    family_id: str | None = None,
    login_session_id: str | None = None,
    nonce: str | None = None,
    context: DeviceContext = NO_CONTEXT,
    bind_dpop: bool = False,
    clock: Clock = utcnow,
) -> dict[str, Any]:
    """A new sign-in: create the family and its first refresh token; return the body. Commits.

    The family records the device context; with ``bind_dpop`` it is bound to the DPoP key.
    A new sign-in from a device that already holds a family of this client replaces it.
    The family gets a random status-list entry, which its access tokens carry.
    """
    now = clock()
    family_id = family_id or creds.new_family_id()
    expires_at = _expiry(now, client.refresh_absolute_ttl, None)
    refresh_token = creds.new_refresh_token() if with_refresh_token else None
    # The entry is taken before the signature (the token carries it), but no lock on its
    # list is held while signing: only count_reserved, the last statement, takes one.
    status = token_status.reserve(session, token_status.FAMILY, family_id, now)
    grant = Grant(client, user.subject, user.id, family_id, scope, auth_time or now, now, nonce,
                  context.dpop_jkt, status)
    body = _response(issue(grant), refresh_token, scope)
    if context.device_id is not None:
        _replace_device_family(session, user.id, client.client_id, context.device_id, now)
    session.execute(
        insert(TokenFamily).values(
            id=family_id,
            user_id=user.id,
            client_id=client.client_id,
            scope=scopes.render(scope),
            grant_type=grant_type,
            auth_time=auth_time or now,
            created_at=now,
            expires_at=expires_at,
            login_session_id=login_session_id,
            device_id=context.device_id,
            user_agent=(context.user_agent or "")[:512] or None,
            ua_family=context.ua_family,
            ip=context.ip,
            dpop_jkt=context.dpop_jkt if bind_dpop else None,
            status_list=status.list_id,
            status_idx=status.idx,
        )
    )
    if refresh_token is not None:
        session.execute(
            insert(RefreshToken).values(
                family_id=family_id,
                token_digest=creds.digest(refresh_token),
                created_at=now,
                ip=context.ip,
                expires_at=_expiry(now, client.refresh_idle_ttl, expires_at),
            )
        )
    audit.record(session, audit.FAMILY_CREATED, user_id=user.id, client_id=client.client_id,
                 family_id=family_id, now=now, grant_type=grant_type,
                 device=context.describe(), dpop_bound=bind_dpop and bool(context.dpop_jkt))
    token_status.count_reserved(session, status, now)
    session.commit()
    return body


def rotate(
    session: Session,
    *,
    presented: str,
    client: ClientRecord,
    requested_scope: str | None,
    issue: IssueAccessToken,
    context: DeviceContext = NO_CONTEXT,
    clock: Clock = utcnow,
) -> dict[str, Any]:
    """Exchange a refresh token for a new pair; return the token response body. Commits.

    Raises ``InvalidRefreshToken`` (nothing changed), ``RefreshTokenReused`` (the family
    was revoked and that revocation committed), ``BindingMismatch`` (the request came
    from another device; revoked when the client's policy says so) or ``ScopeNotGranted``.

    The success path reads in autocommit mode, signs while holding no lock, then claims
    the token and inserts its child in one short write (:func:`_claim`). ``session``
    serves the rare paths: a retry, reuse, a binding mismatch.
    """
    now = clock()
    with autocommit_connection(session) as connection:
        row = refresh_store.lookup(connection, creds.digest(presented))
        if row is None or row.client_id != client.client_id:
            raise InvalidRefreshToken("unknown refresh token")
        if row.revoked_at is not None or row.family_revoked_at is not None \
                or not row.active:
            raise InvalidRefreshToken("the refresh token was revoked")
        bound = Bound(row.device_id, row.ua_family, row.ip, row.dpop_jkt)
        mismatched = binding.mismatches(client.binding, bound, context)
        if row.rotated_at is None:
            body = _rotate_unused(connection, session, presented, row, client,
                                  requested_scope, issue, context, clock, now, mismatched,
                                  bound)
            if body is not None:
                return body
    # A retry is only a retry from the same binding; from elsewhere it is reuse. So is a
    # token that another request rotated (or revoked) after our lookup.
    return _retry_or_reuse(session, row.id, presented, client, clock,
                           mismatched=mismatched, bound=bound, context=context)


def _rotate_unused(
    connection: Connection, session: Session, presented: str, row: refresh_store.TokenRow,
    client: ClientRecord, requested_scope: str | None, issue: IssueAccessToken,
    context: DeviceContext, clock: Clock, now: dt.datetime, mismatched: list[str],
    bound: Bound,
) -> dict[str, Any] | None:
    """Rotate a token not yet used: the response body, or None when the claim was lost."""
    if expired(row.expires_at, now) or expired(row.family_expires_at, now):
        raise InvalidRefreshToken("the refresh token has expired")
    if mismatched:
        _binding_mismatch(session, row.family_id, row.user_id, client, mismatched, bound,
                          context, now)
    scope = scopes.narrow(requested_scope, still_allowed(scopes.parse(row.scope), client))
    child_token = creds.new_refresh_token()
    # A bound family's tokens carry its key; an unbound one's carry the proof's key, if any.
    jkt = row.dpop_jkt or context.dpop_jkt
    status = (token_status.Entry(row.status_list, row.status_idx)
              if row.status_list is not None and row.status_idx is not None else None)
    grant = Grant(client, row.subject, row.user_id, row.family_id, scope, row.auth_time, now,
                  None, jkt, status)
    body = _response(issue(grant), child_token, scope)
    grace = client.reuse_grace
    child = refresh_store.Child(
        family_id=row.family_id, parent_id=row.id, digest=creds.digest(child_token),
        ip=context.ip, expires_at=_expiry(now, client.refresh_idle_ttl, row.family_expires_at))
    then = None
    if row.dpop_jkt is None and context.dpop_jkt and client.public:
        def then(tx: Connection, stamp: dt.datetime) -> None:
            _bind_family_to_key(tx, row.family_id, row.user_id, client, context, stamp)
    sealed = retry_seal.seal(presented, body, row.id) if grace else None
    if not _claim(connection, child, grace=grace, sealed=sealed, clock=clock, then=then):
        return None
    events.emit(events.REFRESH_ROTATED, client_id=client.client_id, family_id=row.family_id)
    return body


def still_allowed(granted: list[str], client: ClientRecord) -> list[str]:
    """What a refresh may still grant: the family's scope within what the client may have
    today. A scope an administrator took from the client is not issued again
    (docs/design.md, "Operations"); when nothing the sign-in was granted is left, the
    refresh is refused with ``ScopeNotGranted`` and nothing changes (an administrator
    who gives a scope back makes the family usable again)."""
    allowed = [s for s in granted if s in client.scope]
    if granted and not allowed:
        raise ScopeNotGranted("none of the scope this sign-in was granted is still allowed "
                              "for the client: sign in again")
    return allowed


def _claim(connection: Connection, child: refresh_store.Child, *, grace: int,
           sealed: bytes | None, clock: Clock,
           then: Callable[[Connection, dt.datetime], None] | None) -> bool:
    """Claim the parent and insert ``child`` atomically; commit; True if this request won.

    The grace window is stamped *after* any wait for SQLite's writer lock, so it runs from
    the commit. On PostgreSQL the stamp precedes the statement, whose lock waits are bounded
    by ``lock_timeout``; the window is lengthened by that bound, so it too lasts at least
    ``grace`` seconds from the commit (a retry sent inside it is never taken for reuse).
    """
    engine = connection.engine

    def window(stamp: dt.datetime) -> dt.datetime | None:
        if not grace:
            return None
        return stamp + seconds(grace + storage_engine.max_lock_wait(engine))

    if then is not None:  # rare: more than the claim must commit with it
        with engine.begin() as tx:
            stamp = clock()
            claimed = refresh_store.claim_and_insert(tx, child, rotated_at=stamp,
                                                     sealed=sealed, retry_until=window(stamp))
            if claimed:
                then(tx, stamp)
            return claimed
    if connection.dialect.name == "sqlite":
        with storage_engine.sqlite_write(connection):
            stamp = clock()
            return refresh_store.claim_and_insert(connection, child, rotated_at=stamp,
                                                  sealed=sealed, retry_until=window(stamp))
    stamp = clock()
    return refresh_store.claim_and_insert(connection, child, rotated_at=stamp, sealed=sealed,
                                          retry_until=window(stamp))


def _bind_family_to_key(session: Session | Connection, family_id: str, user_id: int,
                        client: ClientRecord, context: DeviceContext, now: dt.datetime
                        ) -> None:
    """RFC 9449 §5: a public client's refresh token issued in answer to a DPoP proof is
    bound to the proof's key. A family signed in without a proof is bound by its first
    refresh with one; from then on every refresh needs that key."""
    session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.dpop_jkt.is_(None))
        .values(dpop_jkt=context.dpop_jkt)
    )
    audit.record(session, audit.FAMILY_BOUND_TO_DPOP_KEY, user_id=user_id,
                 client_id=client.client_id, family_id=family_id, now=now,
                 device=context.describe())


def _binding_mismatch(session: Session, family_id: str, user_id: int, client: ClientRecord,
                      mismatched: list[str], bound: Bound, context: DeviceContext,
                      now: dt.datetime) -> None:
    """Audit a refresh from another context; revoke if the policy says so; raise."""
    action = client.binding.on_mismatch
    session.rollback()
    audit.record(session, audit.BINDING_MISMATCH, user_id=user_id, client_id=client.client_id,
                 family_id=family_id, now=now, mismatched=mismatched, action=action,
                 bound=bound.describe(), presented=context.describe())
    if action == "revoke":
        revoke_family(session, family_id, reason="binding_mismatch", now=now)
    session.commit()
    raise BindingMismatch("the refresh token is bound to another device")


def _replace_device_family(session: Session, user_id: int, client_id: str, device_id: str,
                           now: dt.datetime) -> None:
    """One live family per device, client and user: a new sign-in revokes the old one."""
    # Two sign-ins from one device at once must not both see "no live family" and both
    # insert one: on PostgreSQL serialise them on the user's row (SQLite transactions are
    # BEGIN IMMEDIATE, already serial; SQLAlchemy leaves FOR UPDATE out there). NO KEY
    # UPDATE, because each already holds KEY SHARE on that row from inserting rows that
    # reference it (the sign-in audit event): two FOR UPDATE requests would deadlock.
    session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
    old = session.scalars(
        select(TokenFamily.id).where(
            TokenFamily.user_id == user_id, TokenFamily.client_id == client_id,
            TokenFamily.device_id == device_id, TokenFamily.revoked_at.is_(None))
    ).all()
    for family_id in old:
        revoke_family(session, family_id, reason="replaced_by_new_sign_in", now=now)


def _retry_or_reuse(
    session: Session, token_id: int, presented: str, client: ClientRecord, clock: Clock,
    *, mismatched: list[str], bound: Bound, context: DeviceContext,
) -> dict[str, Any]:
    """A rotated token came back: the identical response inside grace, else revoke all."""
    # Read the clock only now: a timestamp taken before waiting on the row lock would make
    # a late request look as if it were inside the window
    # (docs/design.md, "Where Authlib needed care").
    now = clock()
    row = session.execute(
        select(
            RefreshToken.family_id,
            RefreshToken.rotated_at,
            RefreshToken.revoked_at,
            RefreshToken.retry_response,
            RefreshToken.retry_until,
            TokenFamily.revoked_at.label("family_revoked_at"),
            TokenFamily.user_id,
        )
        .join(TokenFamily, TokenFamily.id == RefreshToken.family_id)
        .where(RefreshToken.id == token_id)
    ).one()
    if row.revoked_at is not None or row.family_revoked_at is not None:
        raise InvalidRefreshToken("the refresh token was revoked")
    inside_grace = (
        not mismatched
        and row.retry_response is not None
        and row.retry_until is not None
        and now <= row.retry_until
    )
    if inside_grace:
        body = retry_seal.open_sealed(presented, row.retry_response, token_id)
        if body is not None:
            audit.record(session, audit.ROTATION_RETRY, user_id=row.user_id,
                         client_id=client.client_id, family_id=row.family_id, now=now,
                         rotated_at=row.rotated_at.isoformat() if row.rotated_at else None,
                         presented=context.describe())
            session.commit()
            return body
    revoke_family(session, row.family_id, reason="reuse_detected", now=now)
    audit.record(session, audit.REUSE_DETECTED, user_id=row.user_id, client_id=client.client_id,
                 family_id=row.family_id, now=now,
                 rotated_at=row.rotated_at.isoformat() if row.rotated_at else None,
                 mismatched=mismatched, bound=bound.describe(), presented=context.describe())
    session.commit()
    raise RefreshTokenReused("the refresh token was already used; the session is revoked")


def revoke_family(
    session: Session, family_id: str, *, reason: str, now: dt.datetime | None = None,
    by: Mapping[str, Any] | None = None,
) -> bool:
    """Revoke a family and every token in it. True if it was live. Joins the caller's
    transaction; only called from the domain (``sessions``, ``client_admin``, ``codes``
    and this module's error paths, which commit).

    The audit row names the cause, the device the family was bound to and, with ``by``,
    who asked for it from where (an IP, a user-agent family: never a credential). The
    family's status-list entry is set INVALID, so every access token it issued fails a
    resource server's status check (docs/design.md, "Revocation that reaches APIs").
    """
    now = now or utcnow()
    revoked = session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
        .returning(TokenFamily.user_id, TokenFamily.client_id, TokenFamily.device_id,
                   TokenFamily.ua_family, TokenFamily.ip, TokenFamily.dpop_jkt,
                   TokenFamily.status_list, TokenFamily.status_idx)
    ).one_or_none()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason, retry_response=None, retry_until=None)
    )
    if revoked is not None and revoked.status_list is not None \
            and revoked.status_idx is not None:
        token_status.invalidate(
            session, token_status.Entry(revoked.status_list, revoked.status_idx),
            owner_kind=token_status.FAMILY, owner_id=family_id, now=now)
    if revoked is not None:
        device = Bound(revoked.device_id, revoked.ua_family, revoked.ip, revoked.dpop_jkt)
        audit.record(session, audit.FAMILY_REVOKED, user_id=revoked.user_id,
                     client_id=revoked.client_id, family_id=family_id, now=now, cause=reason,
                     device=device.describe(), **({"by": dict(by)} if by else {}))
        logout_outbox.enqueue(session, family_id=family_id, client_id=revoked.client_id,
                              user_id=revoked.user_id, now=now)
    return revoked is not None
