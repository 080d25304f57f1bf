"""Keep secrets out of what gym_ray stores and logs.

An endpoint's error body may echo the API key it was sent; a tool may print the environment. Every
stored error (the rows' `error` column) and every log record of this process pass through `redact`,
which replaces the values of registered secrets and of environment variables whose names say they
hold one (`*_API_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, ...).
"""

from __future__ import annotations

import logging
import os
import re

MASK = "[redacted]"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_MIN_LEN = 8  # shorter values ("1", "true") would mangle ordinary text

_registered: set[str] = set()
_env_cache: tuple[int, tuple[str, ...]] | None = None


def register_secret(value: str | None) -> None:
    """Redact `value` from now on in this process (e.g. an API key read from a file)."""
    if value and len(value) >= _MIN_LEN:
        _registered.add(value)


def _env_secrets() -> tuple[str, ...]:
    global _env_cache
    key = hash(frozenset(os.environ.items()))
    if _env_cache is None or _env_cache[0] != key:
        values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LEN}
        _env_cache = (key, tuple(values))
    return _env_cache[1]


def known_secrets() -> list[str]:
    """Longest first, so a secret containing another is masked whole."""
    return sorted({*_registered, *_env_secrets()}, key=len, reverse=True)


def redact(text: str) -> str:
    if not text:
        return text
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message (arguments and traceback included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean, clean_exc = redact(message), redact(record.exc_text or "")
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text and clean_exc != record.exc_text:
            record.exc_text = clean_exc
        return True


def install_log_redaction() -> None:
    """Attach the filter to every handler of the root logger (once); records of any logger pass them."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
