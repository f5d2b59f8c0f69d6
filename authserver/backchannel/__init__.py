"""OpenID Connect Back-Channel Logout 1.0: delivering the logout tokens that the outbox
holds (docs/design.md, "Revocation that reaches APIs").

- ``logout_token.py``: the ``logout+jwt`` a message becomes, signed by the active key;
- ``sender.py``: one outbound POST, with the rules for calling client-registered URLs;
- ``worker.py``: the loop that claims due messages and records each outcome, in a thread
  of every ``authserver serve`` process or alone as ``authserver worker``.

The rows are written and settled by :mod:`authserver.domain.logout_outbox`.
"""
