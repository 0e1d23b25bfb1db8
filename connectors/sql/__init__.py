"""DDL of the source systems pssync captures (used by the demo and the tests)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import URL, create_engine, text

from streams.settings import SourceDb

SQL_DIR = Path(__file__).resolve().parent


def db_url(db: SourceDb) -> URL:
    # A URL object: any character in the password works, and str() of it masks the password.
    return URL.create(
        "postgresql+psycopg",
        username=db.user,
        password=db.password,
        host=db.host,
        port=db.port,
        database=db.dbname,
    )


def apply_schema(db: SourceDb, name: str) -> None:
    """Run connectors/sql/<name>.sql against `db` (idempotent DDL)."""
    engine = create_engine(db_url(db))
    try:
        with engine.begin() as conn:
            conn.execute(text((SQL_DIR / f"{name}.sql").read_text()))
    finally:
        engine.dispose()
