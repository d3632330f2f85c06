"""Log line formats of the daemons: plain text, journald-friendly text, JSON lines.

* ``text`` on a terminal or file: ``2026-11-27 12:00:00,000 v6mostly NAME LEVEL: message``.
* ``text`` under systemd (``JOURNAL_STREAM`` set: stderr is the journal): no
  timestamp of our own (journald adds one) and the ``<N>`` syslog priority prefix
  journald reads (``SyslogLevelPrefix=``, on by default), so ``journalctl -p
  warning`` works.
* ``json``: one object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``,
  ``pid``, ``msg`` (and ``exc`` with a traceback), for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import time

#: logging level -> syslog priority (RFC 5424 §6.2.1)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def on_journal(environ: dict[str, str] | os._Environ[str], fd: int = 2) -> bool:
    """Is ``fd`` the journal's stream? systemd sets ``JOURNAL_STREAM=DEV:INO`` of it;
    a child whose stderr went elsewhere inherits the variable, so compare."""
    dev_ino = environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in dev_ino.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def formatter(kind: str, environ: dict[str, str] | None = None, fd: int = 2) -> logging.Formatter:
    env = os.environ if environ is None else environ
    if kind == "json":
        return JsonFormatter()
    if on_journal(env, fd):
        return JournalFormatter()
    return logging.Formatter("%(asctime)s v6mostly %(name)s %(levelname)s: %(message)s")
