"""Errors of the storage layer. Each message names the thing and says what to do about it."""

from __future__ import annotations


class StorageError(Exception):
    """Base class: anything storage refuses, with a message meant for the user."""


class NotFoundError(StorageError, LookupError):
    pass


class ProjectExistsError(StorageError):
    pass


class ConflictError(StorageError):
    """Someone else changed the project since this copy was read (optimistic locking)."""


class AssetError(StorageError, ValueError):
    pass


class AssetTooLargeError(AssetError):
    pass


class BundleError(StorageError, ValueError):
    """A project bundle that cannot be imported (bad zip, unsafe member, unknown version...)."""
