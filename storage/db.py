"""Engine, sessions and schema upgrades.

The caller (app.py, the CLI) creates the engine and sessionmaker once with `open_database`, which
also upgrades the schema to the newest Alembic revision; functions elsewhere receive a session.

SQLite is set up on every new connection: WAL (readers never block the writer, and a killed
process leaves committed transactions intact), foreign keys on (off by default in SQLite!),
synchronous=NORMAL (durable against process crashes; only an OS crash may drop the last
commits) and a busy timeout so that a render and the UI writing at once wait instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = REPO_ROOT / "migrations"
BUSY_TIMEOUT_S = 30.0  # longer than any of our write transactions (one take, one import)


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for `url`; SQLite files get their folder created and the pragmas above."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("timeout", BUSY_TIMEOUT_S)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def alembic_config(url: str | None = None):
    """The Alembic config for migrations/, independent of the current working directory."""
    from alembic.config import Config

    ini = REPO_ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema to the newest revision, in one transaction where the database allows it."""
    from alembic import command

    if not MIGRATIONS_DIR.is_dir():
        raise FileNotFoundError(f"Alembic migrations folder not found: {MIGRATIONS_DIR}")
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction unless told; BEGIN IMMEDIATE makes the whole
            # upgrade atomic and makes a second process starting at once wait for the first.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def open_database(url: str | None = None, *, upgrade: bool = True, **engine_kwargs) -> sessionmaker[Session]:
    """Create the engine and sessionmaker for `url` (default: SVI_DATABASE_URL or <SVI_DATA_DIR>/svi.db),
    upgrading the schema to head first. Call once per process.

    `expire_on_commit=False`: objects returned by short transactions stay readable afterwards
    (the UI shows them); anything that must be current is re-read in a new transaction."""
    if url is None:
        from .settings import StorageSettings

        url = StorageSettings.from_env().database_url
    engine = make_engine(url, **engine_kwargs)
    if upgrade:
        upgrade_to_head(engine)
    return sessionmaker(engine, expire_on_commit=False)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def database_url_for_display(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


__all__ = ["make_engine", "open_database", "upgrade_to_head", "alembic_config", "current_revision",
           "database_url_for_display", "MIGRATIONS_DIR"]
