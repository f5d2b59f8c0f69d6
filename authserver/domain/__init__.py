"""The domain: plain-Python rules over a SQLAlchemy session and the clock. No Flask here."""
