"""DDL of the source systems pssync captures (used by the demo and the tests)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, text

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


def server_engine(db: SourceDb) -> Engine:
    """AUTOCOMMIT engine on `db`'s server maintenance database (CREATE/DROP/ALTER DATABASE)."""
    return create_engine(db_url(db).set(database="postgres"), isolation_level="AUTOCOMMIT")


def server_execute(db: SourceDb, sql: str) -> None:
    """Run one statement that must not be in a transaction, e.g. CREATE DATABASE."""
    engine = server_engine(db)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def apply_schema(db: SourceDb, name: str) -> None:
    """Run connectors/sql/<name>.sql against `db` (idempotent DDL)."""
    engine = create_engine(db_url(db))
    try:
        with engine.begin() as conn:
            conn.execute(text((SQL_DIR / f"{name}.sql").read_text()))
    finally:
        engine.dispose()
