"""Storage: the SQL schema (SQLAlchemy Core + Alembic), idempotent batch writes, checkpoints."""
