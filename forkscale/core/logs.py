"""Logging set-up: plain lines on stderr, and secrets kept out of every record.

Every secret forkscale reads (vCenter and guest-operations passwords, the API token) is
registered with `register_secret` as it is read. The handler's filter then replaces it with
`***` in the message *and* in an attached traceback (`exc_info`, `stack_info`), which it formats
once, redacted, into `record.exc_text`, so no handler formats the raw exception again (the
logger's name and the level are left alone: a short password that is also a word must not mangle
them). `redact` does the same for text printed outside logging (the CLI's `error:` line).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

_SECRETS: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never print this value: it is replaced by '***' in every log record."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by '***' (longest first, so none is left half-shown)."""
    if not _SECRETS or not any(s in text for s in _SECRETS):
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class _Redact(logging.Filter):
    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def make_handler(stream: TextIO | None = None) -> logging.Handler:
    """The handler forkscale logs through: one line per record (plus any traceback), redacted."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_Redact())
    return handler


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    root.handlers[:] = [make_handler()]
    root.setLevel(level)
    logging.getLogger("forkscale").setLevel(min(level, logging.INFO) if verbosity >= 0 else level)
