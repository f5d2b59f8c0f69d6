"""authserver: an OAuth 2.0 / OpenID Connect authorization server.

The package is laid out by role:

- ``config``      settings, loaded and validated once at start-up
- ``storage``     SQLAlchemy models and engine set-up (the only place that knows SQL dialects)
- ``domain``      plain-Python rules: refresh-token families and rotation, users, clients, audit
- ``crypto``      signing keys and every JOSE call
- ``protocol``    Authlib grants and the OAuth HTTP endpoints (thin adapters over the domain)
- ``cli``         the ``authserver`` command

Importing this package imports nothing else, so ``authserver.resource`` (the resource-server
library) stays usable without Flask or the database.
"""
