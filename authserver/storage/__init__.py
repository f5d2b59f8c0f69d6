"""Storage: typed SQLAlchemy models and engine set-up. Only this package knows SQL dialects.

Besides the domain, only this package commits, and only its own infrastructure
transactions, each on a connection of its own: SQLite's short write transaction of the
refresh grant's claim (``engine.sqlite_write``, run by the domain around
``refresh_store``'s statements) and each insert of the DPoP replay cache
(``replay_cache``) (docs/design.md, "Transactions")."""
