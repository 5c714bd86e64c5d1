from sqlalchemy import inspect

from router.db.database import Database


def test_migrations_create_every_table_on_postgres(pg_db: Database) -> None:
    names = set(inspect(pg_db.engine).get_table_names())
    assert {"jobs", "model_usage_log", "vram_usage_log", "feedback", "alembic_version"} <= names
    assert pg_db.engine.dialect.name == "postgresql"
