"""Token Status List entries (draft-ietf-oauth-status-list): the only writer of the
``status_lists`` and ``token_statuses`` tables (docs/design.md, "Revocation that reaches
APIs").

Every family gets an entry when it starts, and every client one for its
``client_credentials`` tokens; each access token carries its owner's entry as
``status.status_list`` (``idx``, ``uri``). Ending the owner sets the entry INVALID and bumps
the list's ``version`` in the revocation's own transaction.

- **Allocation** (:func:`reserve`, :func:`count_reserved`, :func:`allocate`): a random index
  (``secrets.randbelow``) in the newest list that is less than half full, so neighbouring
  indices say nothing about who signed in when; a new list of the configured size is opened
  when none is. The index is taken by ``INSERT ... ON CONFLICT DO NOTHING`` on the entry's
  primary key: of two transactions that drew one index, one inserts and the other draws
  again (on PostgreSQL it first waits for the winner's commit), and a transaction never
  aborts for it. Two processes opening "the next list" at once do the same on the list's
  id. The count of entries in a list (``allocated``) is raised last (:func:`count_reserved`),
  so the list's row is locked only until the commit, never while a token is signed.
- **Invalidation** (:func:`invalidate`): status 1, ``changed_at``, and ``free_after`` = the
  latest ``exp`` any token can have (the longest access-token lifetime a client may be
  given, whatever this one's is today) plus :data:`LEEWAY`.
- **Freeing** (:func:`free_entries`, ``authserver db purge``): only entries past
  ``free_after`` whose owner no longer points to them (the family row is gone; the client is
  deleted or carries another entry). An entry that lost its owner without ending (a family
  purged after it expired) first gets a ``free_after`` a whole maximal token lifetime away.
- **Reads** for the serving side (``protocol/status_lists.py``): :func:`list_ids`,
  :func:`list_version`, :func:`list_snapshot`.

Functions that write join the caller's transaction, except :func:`ensure_client_entry`
(one unit of work of its own) and :func:`free_entries` (housekeeping: a batch per
transaction).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..storage.models import Client, StatusList, TokenFamily, TokenStatus
from .client_metadata import ACCESS_TTL_BOUNDS
from .clock import seconds, utcnow

VALID, INVALID = 0, 1  # the draft's status values (1 bit per entry)
FAMILY, CLIENT = "family", "client"  # owner_kind
LEEWAY = 60  # seconds added to free_after: clock skew of the resource servers
ATTEMPTS = 32  # random draws per allocation; each hits a free index with p > 1/2
DEFAULT_LIST_SIZE = 131_072
MAX_ACCESS_TTL = ACCESS_TTL_BOUNDS[1]

_statuses = cast(Table, TokenStatus.__table__)
_lists = cast(Table, StatusList.__table__)


@dataclass(frozen=True)
class Entry:
    """One entry of a status list: the ``idx`` in the list ``list_id``."""

    list_id: int
    idx: int


@dataclass(frozen=True)
class Policy:
    """What the settings say: the size of a new list."""

    list_size: int = DEFAULT_LIST_SIZE


_policies: dict[Engine, Policy] = {}


def install(engine: Engine, *, list_size: int) -> None:
    """Record the settings for the database behind ``engine`` (the app factory calls it)."""
    _policies[engine] = Policy(list_size)


def _policy(session: Session) -> Policy:
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    return _policies.get(engine, Policy())


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session, table: Table) -> Any:
    """``INSERT`` with ``ON CONFLICT DO NOTHING`` available (PostgreSQL or SQLite)."""
    return (postgresql.insert(table) if _dialect(session) == "postgresql"
            else sqlite.insert(table))


# -- allocation -----------------------------------------------------------------------------


def _open_list(session: Session) -> tuple[int, int] | None:
    """The newest list with fewer than half its entries handed out (id, size), or None."""
    row = session.execute(
        select(StatusList.id, StatusList.size).where(StatusList.allocated * 2 < StatusList.size)
        .order_by(StatusList.id.desc()).limit(1)).one_or_none()
    return None if row is None else (int(row.id), int(row.size))


def _new_list(session: Session, size: int, now: dt.datetime) -> None:
    """Open the next list (``max(id) + 1``). Another transaction opening the same one at
    once makes this a no-op (PostgreSQL: after waiting for its commit)."""
    next_id = (session.scalar(select(func.max(StatusList.id))) or 0) + 1
    session.execute(
        _insert(session, _lists).values(id=next_id, size=size, allocated=0, version=0,
                                        created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["id"]))


def reserve(session: Session, owner_kind: str, owner_id: str,
            now: dt.datetime | None = None) -> Entry:
    """Take a free random entry for an owner (VALID); :func:`count_reserved` must follow
    before the commit. Joins the caller's transaction; only called from the domain."""
    now = now or utcnow()
    size = _policy(session).list_size
    for _ in range(ATTEMPTS):
        open_list = _open_list(session)
        if open_list is None:
            _new_list(session, size, now)
            continue
        list_id, list_size = open_list
        idx = secrets.randbelow(list_size)
        taken = session.execute(
            _insert(session, _statuses).values(
                list_id=list_id, idx=idx, status=VALID, owner_kind=owner_kind,
                owner_id=owner_id, created_at=now)
            .on_conflict_do_nothing(index_elements=["list_id", "idx"])
            .returning(_statuses.c.idx)).first()
        if taken is not None:
            return Entry(list_id, idx)
    raise RuntimeError("no free status-list entry found")  # p < 2^-32 for a half-full list


def count_reserved(session: Session, entry: Entry, now: dt.datetime | None = None) -> None:
    """Count a reserved entry in its list's ``allocated``. Last before the commit: on
    PostgreSQL it locks the list's row until then. Joins the caller's transaction; only
    called from the domain."""
    session.execute(update(StatusList).where(StatusList.id == entry.list_id)
                    .values(allocated=StatusList.allocated + 1))


def allocate(session: Session, owner_kind: str, owner_id: str,
             now: dt.datetime | None = None) -> Entry:
    """:func:`reserve` and :func:`count_reserved` at once, where nothing slow follows.
    Joins the caller's transaction; only called from the domain."""
    entry = reserve(session, owner_kind, owner_id, now)
    count_reserved(session, entry, now)
    return entry


def allocate_for_client(session: Session, client: Client, now: dt.datetime | None = None,
                        *, replacing: Entry | None = None) -> Entry:
    """A new entry for ``client``'s ``client_credentials`` tokens, stored on its row in
    place of ``replacing`` (None: it has none). If another transaction stored one first
    (a grant of a legacy client, :func:`ensure_client_entry`), that one is kept and this
    allocation undone. Returns the client's entry. Joins the caller's transaction; only
    called from the domain (``client_admin``)."""
    now = now or utcnow()
    entry = reserve(session, CLIENT, client.client_id, now)
    held = (Client.status_list.is_(None) if replacing is None
            else and_(Client.status_list == replacing.list_id,
                      Client.status_idx == replacing.idx))
    stored = session.execute(
        update(Client).where(Client.client_id == client.client_id, held)
        .values(status_list=entry.list_id, status_idx=entry.idx)
        .returning(Client.id)
        .execution_options(synchronize_session=False)).first()
    if stored is not None:
        set_committed_value(client, "status_list", entry.list_id)
        set_committed_value(client, "status_idx", entry.idx)
        count_reserved(session, entry, now)
        return entry
    session.execute(_statuses.delete().where(_statuses.c.list_id == entry.list_id,
                                             _statuses.c.idx == entry.idx))
    session.refresh(client, ["status_list", "status_idx"])
    if client.status_list is None or client.status_idx is None:
        raise RuntimeError("the client's status-list entry changed concurrently")
    return Entry(client.status_list, client.status_idx)


def ensure_client_entry(session: Session, client_id: str, now: dt.datetime | None = None
                        ) -> Entry | None:
    """The client's entry, allocated now if it has none (a client registered before status
    lists); None if the client is gone. Two grants of one client at once store one entry:
    the row is set only ``WHERE status_list IS NULL``, and the loser's allocation is rolled
    back. One short transaction of its own. Commits."""
    now = now or utcnow()
    entry = allocate(session, CLIENT, client_id, now)
    stored = session.execute(
        update(Client).where(Client.client_id == client_id, Client.status_list.is_(None))
        .values(status_list=entry.list_id, status_idx=entry.idx)
        .returning(Client.id)).first()
    if stored is not None:
        session.commit()
        return entry
    session.rollback()
    row = session.execute(select(Client.status_list, Client.status_idx)
                          .where(Client.client_id == client_id)).one_or_none()
    session.rollback()
    if row is None or row.status_list is None or row.status_idx is None:
        return None
    return Entry(row.status_list, row.status_idx)


# -- invalidation ---------------------------------------------------------------------------


def invalidate(session: Session, entry: Entry, *, owner_kind: str, owner_id: str,
               now: dt.datetime | None = None) -> bool:
    """Set the owner's entry INVALID (and when it may be freed) and bump its list's
    ``version``; False if it already was. Joins the caller's transaction; only called from
    the domain (``refresh_families.revoke_family``, ``client_admin``)."""
    now = now or utcnow()
    # The longest lifetime any access token can have, not the client's lifetime of today:
    # an admin may have lowered it since the entry's tokens were issued.
    free_after = now + seconds(MAX_ACCESS_TTL + LEEWAY)
    changed = session.execute(
        update(TokenStatus)
        .where(TokenStatus.list_id == entry.list_id, TokenStatus.idx == entry.idx,
               TokenStatus.owner_kind == owner_kind, TokenStatus.owner_id == owner_id,
               TokenStatus.status != INVALID)
        .values(status=INVALID, changed_at=now, free_after=free_after)
        .returning(TokenStatus.idx)).first()
    if changed is None:
        return False
    session.execute(update(StatusList).where(StatusList.id == entry.list_id)
                    .values(version=StatusList.version + 1, updated_at=now))
    return True


def invalidate_client(session: Session, client: Client, now: dt.datetime | None = None
                      ) -> bool:
    """Set a client's own entry (its ``client_credentials`` tokens) INVALID. Joins the
    caller's transaction; only called from the domain (``client_admin``)."""
    if client.status_list is None or client.status_idx is None:
        return False
    return invalidate(session, Entry(client.status_list, client.status_idx),
                      owner_kind=CLIENT, owner_id=client.client_id, now=now)


# -- freeing (housekeeping) -----------------------------------------------------------------


def _owner_gone() -> ColumnElement[bool]:
    """The entry's owner no longer points to it: no family row with its id, or no client
    row carrying it. Each a probe of a unique index."""
    family_exists = exists().where(TokenFamily.id == TokenStatus.owner_id)
    client_holds = exists().where(Client.client_id == TokenStatus.owner_id,
                                  Client.status_list == TokenStatus.list_id,
                                  Client.status_idx == TokenStatus.idx)
    return or_(and_(TokenStatus.owner_kind == FAMILY, ~family_exists),
               and_(TokenStatus.owner_kind == CLIENT, ~client_holds))


def free_entries(session: Session, *, now: dt.datetime | None = None,
                 batch_size: int = 1000,
                 after_batch: Callable[[str, int], None] | None = None) -> int:
    """Free (delete) every entry past its ``free_after`` whose owner is gone, lowering its
    list's ``allocated`` and bumping its ``version``; return how many. An entry that lost
    its owner without ending (no ``free_after``) gets one a maximal token lifetime from
    now, and is freed by a later purge. Never an entry whose family row still exists.
    Walks the entries in primary-key order, one page per transaction, like the rest of
    the purge (``housekeeping``). Commits each batch."""
    now = now or utcnow()
    key = tuple_(TokenStatus.list_id, TokenStatus.idx)
    due = or_(TokenStatus.free_after.is_(None), TokenStatus.free_after < now)
    total, last = 0, None
    while True:
        query = select(TokenStatus.list_id, TokenStatus.idx, TokenStatus.free_after).where(
            _owner_gone(), due)
        if last is not None:
            query = query.where(key > tuple_(*last))
        page = session.execute(query.order_by(TokenStatus.list_id, TokenStatus.idx)
                               .limit(batch_size)).all()
        if not page:
            session.commit()
            return total
        last = (page[-1].list_id, page[-1].idx)
        orphans = [(r.list_id, r.idx) for r in page if r.free_after is None]
        freed = [(r.list_id, r.idx) for r in page if r.free_after is not None]
        if orphans:
            session.execute(
                _statuses.update()
                .where(tuple_(_statuses.c.list_id, _statuses.c.idx).in_(orphans))
                .values(free_after=now + seconds(MAX_ACCESS_TTL + LEEWAY)))
        if freed:
            session.execute(_statuses.delete().where(
                tuple_(_statuses.c.list_id, _statuses.c.idx).in_(freed)))
            per_list: dict[int, int] = {}
            for list_id, _ in freed:
                per_list[list_id] = per_list.get(list_id, 0) + 1
            for list_id, count in sorted(per_list.items()):
                session.execute(
                    update(StatusList).where(StatusList.id == list_id)
                    .values(allocated=StatusList.allocated - count,
                            version=StatusList.version + 1, updated_at=now))
        session.commit()
        total += len(freed)
        if after_batch is not None:
            after_batch("status_entries", len(freed))


# -- reads for the serving side -------------------------------------------------------------


def list_ids(connection: Connection) -> list[int]:
    """Every list's id, in order."""
    return [int(i) for i in connection.execute(select(_lists.c.id).order_by(_lists.c.id))
            .scalars()]


def list_version(connection: Connection, list_id: int) -> int | None:
    """The list's ``version`` (changes with every entry that changes), or None."""
    version = connection.execute(
        select(_lists.c.version).where(_lists.c.id == list_id)).scalar_one_or_none()
    return None if version is None else int(version)


def list_snapshot(connection: Connection, list_id: int
                  ) -> tuple[int, int, list[tuple[int, int]]] | None:
    """The list's ``version``, ``size`` and its entries that are not VALID as ``(idx,
    status)`` (one indexed query of ``(list_id, status)``); None if there is no such list.
    The version is read first, so the entries are never older than it says (a change
    committed in between shows as a newer version next time: a rebuild, nothing lost).
    No transaction is opened (on SQLite one would take the writer lock)."""
    head = connection.execute(
        select(_lists.c.version, _lists.c.size).where(_lists.c.id == list_id)
    ).one_or_none()
    if head is None:
        return None
    entries = connection.execute(
        select(_statuses.c.idx, _statuses.c.status)
        .where(_statuses.c.list_id == list_id, _statuses.c.status != VALID)
        .order_by(_statuses.c.idx)).all()
    return int(head.version), int(head.size), [(int(i), int(s)) for i, s in entries]
