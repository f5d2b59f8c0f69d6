"""Running in production: health checks, metrics and logs (docs/design.md, "Operations")."""
