"""JSON text written directly, for hot paths that build JSON from fixed forms."""

from __future__ import annotations

from json.encoder import encode_basestring_ascii


def json_string(value: str) -> str:
    """Return ``value`` as a JSON string literal, exactly as ``json.dumps`` writes it."""
    return encode_basestring_ascii(value)
