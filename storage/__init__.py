"""Storage: projects that persist (SQLAlchemy models, asset store, takes, resumable renders, bundles).

Imports only svi dataclasses from the engine (ARCHITECTURE 2). The engine and sessionmaker are
created once by the caller with `storage.db.open_database`; every operation receives a session.
"""
