"""Storage: typed SQLAlchemy models and engine set-up. Only this package knows SQL dialects."""
