"""The domain: plain-Python rules over a SQLAlchemy session and the clock. No Flask here.

The domain owns the transaction: a public function that changes state commits before it
returns ("Commits."); helpers that only add to an open transaction say "Joins the caller's
transaction; only called from the domain" (docs/design.md, "Transactions")."""
