"""Logging for services: one JSON line per event, written by a separate thread so that logging never
blocks a loop (G2). When the queue is full records are dropped and counted, and the count is reported."""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import time
from typing import Any

_SECRET = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_URL_SECRET = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def redact(text: str) -> str:
    """Remove passwords from conninfo strings and URLs (G12)."""
    return _URL_SECRET.sub(r"\1***\3", _SECRET.sub(r"\1***", text))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, node: str) -> None:
        super().__init__()
        self.service = service
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "node": self.node,
            "msg": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            body.update(fields)
        if record.exc_info:
            body["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str, fmt: str | None, datefmt: str | None) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s: %(message)s", datefmt)
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return redact(f"{self.service}: {super().format(record)}")


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.lost = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.lost += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if self.lost and record.levelno >= logging.WARNING:
            lost, self.lost = self.lost, 0
            record.msg = f"{record.msg} ({lost} log records were lost: the log queue was full)"
        prepared: logging.LogRecord = super().prepare(record)
        return prepared


_listener: logging.handlers.QueueListener | None = None
_lock = threading.Lock()


def setup(service: str, node: str, log_config: dict[str, Any] | None = None, *, json_lines: bool = True) -> None:
    """Route every logger of this process through a bounded queue to stderr."""
    global _listener
    cfg = log_config or {}
    level = str(cfg.get("level") or "INFO").upper()
    if level == "WARN":
        level = "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(service, node) if json_lines else TextFormatter(service, cfg.get("format"), cfg.get("dateformat"))
    )
    q: queue.Queue[Any] = queue.Queue(maxsize=int(cfg.get("max_queue_size") or 1000))
    with _lock:
        if _listener is not None:
            _listener.stop()
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_DroppingQueueHandler(q))
        root.setLevel(level)
        for name, lvl in (cfg.get("loggers") or {}).items():
            logging.getLogger(str(name)).setLevel(str(lvl).upper())
        _listener = logging.handlers.QueueListener(q, handler, respect_handler_level=False)
        _listener.start()


def shutdown() -> None:
    global _listener
    with _lock:
        if _listener is not None:
            _listener.stop()
            _listener = None
