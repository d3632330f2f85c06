"""The control socket each daemon opens for ``v6mostly ctl``.

A Unix stream socket (mode 0600: root only, as the daemons run), one request per
connection: a JSON object with ``cmd`` (and its arguments) on one line; the
answer is one JSON object, ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``, and the connection closes. Handlers run on the socket's own thread:
they read what the daemon exports (state, counters) and must not block the
packet path; a reload is handed to the daemon's main loop (SIGHUP), whose
outcome the handler waits for.

Default paths: ``/run/v6mostly/DAEMON/DAEMON.sock`` for plat, siit and router (a
directory each: the systemd units give each its own ``RuntimeDirectory``, owned by
its dynamic user) and ``/run/v6mostly/clat-IF.sock`` beside the CLAT's state.

The design: docs/architecture.md §5.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable
from typing import Any

from .errors import V6mostlyError

log = logging.getLogger("v6mostly.control")

RUN_DIR = "/run/v6mostly"
MAX_REQUEST = 65536

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(V6mostlyError):
    pass


def default_path(daemon: str) -> str:
    return os.path.join(RUN_DIR, daemon, f"{daemon}.sock")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handlers: dict[str, Handler]


class _Request(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = b""
        try:
            line = self.rfile.readline(MAX_REQUEST)
            req = json.loads(line or b"{}")
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError('expected {"cmd": "..."}')
            fn = self.server.handlers.get(req["cmd"])
            if fn is None:
                known = ", ".join(sorted(self.server.handlers))
                err = f"unknown command {req['cmd']!r} (known: {known})"
                out: dict[str, Any] = {"ok": False, "error": err}
            else:
                out = {"ok": True, **fn(req)}
        except ValueError as e:
            out = {"ok": False, "error": f"bad request: {e}"}
        except Exception as e:  # a handler's failure is an answer, never a dead thread
            log.exception("control: %r failed", line[:100])
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(out, default=str).encode() + b"\n")


class ControlServer:
    """Serve ``handlers`` on ``path`` until :meth:`close`."""

    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        _claim(path)
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        old = os.umask(0o177)
        try:
            self.server = _Server(path, _Request)
        except OSError as e:
            raise ControlError(f"control socket {path}: {e.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.server.handlers = handlers
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="control", daemon=True
        )
        self.thread.start()
        log.info("control socket %s", path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _claim(path: str) -> None:
    """Refuse a socket another live instance answers on; remove a stale one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket {path}: exists and is not a socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a killed instance
        return
    finally:
        s.close()
    raise ControlError(f"control socket {path}: another instance is running")


def request(path: str, cmd: str, timeout: float = 15.0, **args: Any) -> dict[str, Any]:
    """One request to the daemon on ``path``; raises ControlError when it cannot."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise ControlError(f"{path}: no such socket (is the daemon running?)") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (run as root)") from None
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror}") from None
    try:
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        out = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: not a v6mostly control socket") from None
    if not isinstance(out, dict):
        raise ControlError(f"{path}: unexpected answer")
    return out
