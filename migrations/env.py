"""Alembic environment for the storage schema.

Used two ways: by `storage.db.upgrade_to_head`, which passes an open connection in
`config.attributes["connection"]`; and by the `alembic` command line, which connects to
`-x url=...`, `sqlalchemy.url` in alembic.ini, or the app's own setting (SVI_DATABASE_URL / SVI_DATA_DIR).
SQLite gets batch mode (`render_as_batch`): it cannot ALTER most things in place.
"""

from __future__ import annotations

from alembic import context

from storage.db import make_engine
from storage.models import Base
from storage.settings import StorageSettings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (context.get_x_argument(as_dictionary=True).get("url")
            or config.get_main_option("sqlalchemy.url")
            or StorageSettings.from_env().database_url)


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def run_migrations_offline() -> None:
    url = _url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
