"""DDL of the source systems pssync captures (used by the demo and the tests)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from streams.settings import SourceDb

SQL_DIR = Path(__file__).resolve().parent


def db_url(db: SourceDb) -> str:
    return f"postgresql+psycopg://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"


def apply_schema(db: SourceDb, name: str) -> None:
    """Run connectors/sql/<name>.sql against `db` (idempotent DDL)."""
    engine = create_engine(db_url(db))
    try:
        with engine.begin() as conn:
            conn.execute(text((SQL_DIR / f"{name}.sql").read_text()))
    finally:
        engine.dispose()
