"""Removal of secrets from text that leaves the process (logs, errors, health output)."""

from __future__ import annotations

import re

#: ``scheme://user:password@`` in any text; the password part is replaced.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s/]+)@"
)
#: libpq keyword form, ``password=secret``.
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<prefix>\bpassword\s*=\s*)(?P<password>[^\s'\"]+)")

#: Characters kept of an error message stored in the database or shown by health.
MAX_ERROR_MESSAGE_CHARS = 500


def redact(text: str) -> str:
    """Return ``text`` with every URL password and ``password=`` value replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<prefix>***@", text)
    return _KEYWORD_PASSWORD.sub(r"\g<prefix>***", text)


def describe_error(exc: BaseException, max_chars: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """Return ``ClassName: message`` with secrets removed, cut to ``max_chars``."""
    message = redact(f"{type(exc).__name__}: {exc}")
    if len(message) > max_chars:
        return message[: max_chars - 3] + "..."
    return message
