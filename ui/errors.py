"""User-facing failures: known errors become `gr.Error` with their message; bugs stay bugs.

Every handler that takes user input is wrapped in `@user_errors`. Messages from deeper layers name
files by the path they were read from; for uploads that is Gradio's temp copy, so the temp folder is
cut from the message and the user sees the name of the file they picked.
"""

from __future__ import annotations

import functools
import inspect
import re
import tempfile

import gradio as gr

from storage.errors import StorageError
from svi.errors import user_error_types

_TEMP_PATH = re.compile(re.escape(tempfile.gettempdir()) + r"/(?:[^/\s:]+/)*")


class UserError(ValueError):
    """A problem the user can fix, raised by the UI layer itself."""


def known_errors() -> tuple[type[BaseException], ...]:
    return (UserError, StorageError, *user_error_types())


def tidy(message: str) -> str:
    """The message without temp-folder prefixes of uploaded files."""
    return _TEMP_PATH.sub("", str(message)).strip()


def to_gr_error(e: BaseException) -> gr.Error:
    return gr.Error(tidy(str(e)), title=_title(e), print_exception=False)


def _title(e: BaseException) -> str:
    name = type(e).__name__
    if "Conflict" in name:
        return "Changed elsewhere"
    return "Cannot do that"


def user_errors(fn):
    """Turn the user's errors raised by `fn` (plain function or generator) into gr.Error."""
    known = known_errors()
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except known as e:
                raise to_gr_error(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except known as e:
            raise to_gr_error(e) from None
    return wrapper
