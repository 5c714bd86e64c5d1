"""Database: typed tables, the engine/session adapter, and Alembic migrations."""
