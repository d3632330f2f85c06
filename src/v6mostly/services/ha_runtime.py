"""The PLAT's part in a group of PLATs behind ECMP (``[ha]`` in plat.toml; issue 12).

v6mostly never speaks BGP and never copies conntrack entries itself; it drives the
engines operators already run:

* **bird2**: the configuration is rendered from plat.toml (``ha.bird``), checked with
  ``bird -p -c`` before it replaces the file, then bird is told ``birdc configure``.
  bird runs as its own service (Debian's ``bird.service``); when it is not running the
  file is still written and one line says so. bird announces the Pref64 and the outer
  /32s as static device routes via the TUN, so they go away with the PLAT.
* **conntrackd**: the configuration is rendered (``ha.conntrackd``) and conntrackd runs
  as this process's child: restarted when it dies (at most once a second), restarted
  when a SIGHUP changes its file, stopped with the PLAT.

The design: docs/architecture.md §4 (adapters around the cores), docs/deployment.md
(several PLATs behind ECMP).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from ..errors import V6mostlyError
from ..ha import bird, conntrackd
from ..ha.config import HaSettings

log = logging.getLogger("v6mostly.ha")


class HaError(V6mostlyError):
    pass


def missing_tools() -> list[str]:
    """One line per engine that is not installed, naming its Debian package."""
    out: list[str] = []
    for cmd, pkg in (("bird", "bird2"), ("birdc", "bird2")):
        if shutil.which(cmd) is None and not os.path.exists(f"/usr/sbin/{cmd}"):
            out.append(f"{cmd}: not installed (Debian package {pkg})")
    err = conntrackd.check_installed()
    if err:
        out.append(err)
    return out


def _tool(cmd: str) -> str:
    return shutil.which(cmd) or f"/usr/sbin/{cmd}"


def write_checked_bird(ha: HaSettings, tun: str, own_plain: bool = True) -> bool:
    """Render, check (``bird -p -c``) and atomically replace bird's file.
    Returns whether the file changed; raises HaError when bird refuses it."""
    text = bird.render_plat(ha, tun, own_plain)
    path = ha.bird_config
    with contextlib.suppress(OSError), open(path) as f:
        if f.read() == text:
            return False
    d = os.path.dirname(path) or "."
    if not os.path.isdir(d):
        raise HaError(f"[ha] bird_config = {path!r}: directory {d} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".v6mostly-", suffix=".conf", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        err = bird.check(tmp)
        if err:
            raise HaError(f"bird refused the generated configuration: {err}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


def bird_configure(ha: HaSettings) -> str:
    """``birdc configure``; the one-line outcome (bird not running is not an error)."""
    if not os.path.exists(ha.bird_socket):
        return f"bird is not running (no socket {ha.bird_socket}); start it to announce"
    try:
        r = subprocess.run(
            [_tool("birdc"), "-s", ha.bird_socket, "configure"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"birdc configure failed: {e}"
    out = " ".join(ln for ln in r.stdout.splitlines() if not ln.startswith("BIRD ")).strip()
    if r.returncode != 0 or "error" in out.lower():
        return f"birdc configure: {out or r.stderr.strip()}"
    return f"bird: {out or 'configured'}"


class HaRuntime:
    """bird's file and conntrackd's process for one PLAT."""

    def __init__(self, ha: HaSettings, tun: str) -> None:
        self.ha = ha
        self.tun = tun
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0
        self.last_bird = ""
        self.stopping = False
        self.next_bulk = 0.0
        #: False while coming back: the Pref64 held back downstream and our own /32s
        #: behind the peers' announcement of them, until conntrackd's resync is in
        self.own_plain = True
        self.resync: conntrackd.ResyncWait | None = None
        self.resync_asked = False

    # -- start / reload / stop -----------------------------------------------------------

    def start(self) -> None:
        for line in missing_tools():
            if self.ha.state_sync or "conntrackd" not in line:
                raise HaError(line)
        if self.ha.state_sync:
            self.own_plain = False
            self._bird()
            self._write_conntrackd()
            self._spawn()
            self.resync = conntrackd.ResyncWait(time.monotonic())
            self.resync_asked = False
            log.info("waiting for the peers' NAPT66 bindings before announcing (conntrackd resync)")
        else:
            self._bird()
            log.warning("[ha] state_sync = false: no conntrackd; flows die with their PLAT")

    def reload(self, ha: HaSettings) -> str:
        """Apply a changed [ha]; returns a note for ``ctl reload``."""
        old = self.ha
        self.ha = ha
        notes = []
        if self._bird():
            notes.append("bird configuration rewritten")
        if not ha.state_sync:
            if self.proc is not None:
                self._stop_child()
                notes.append("conntrackd stopped (state_sync = false)")
        elif (
            self.proc is None
            or conntrackd.render(ha) != conntrackd.render(old)
            or ha.conntrackd_config != old.conntrackd_config
        ):
            self._write_conntrackd()
            self._stop_child()
            self._spawn()
            notes.append("conntrackd (re)started with its configuration")
        return "; ".join(notes)

    def stop(self) -> None:
        self.stopping = True
        self._stop_child()

    # -- bird ----------------------------------------------------------------------------

    def _bird(self) -> bool:
        changed = write_checked_bird(self.ha, self.tun, self.own_plain)
        if changed:
            log.info("bird configuration written to %s", self.ha.bird_config)
        else:
            log.info("bird configuration %s is up to date", self.ha.bird_config)
        self.last_bird = bird_configure(self.ha)
        if "not running" in self.last_bird or "failed" in self.last_bird:
            log.warning("%s", self.last_bird)
        else:
            log.info("%s", self.last_bird)
        return changed

    # -- conntrackd ----------------------------------------------------------------------

    def _write_conntrackd(self) -> None:
        path = self.ha.conntrackd_config
        d = os.path.dirname(path) or "."
        if not os.path.isdir(d):
            raise HaError(f"[ha] conntrackd_config = {path!r}: directory {d} does not exist")
        with open(path + ".tmp", "w") as f:
            f.write(conntrackd.render(self.ha))
        os.replace(path + ".tmp", path)
        log.info("conntrackd configuration written to %s", path)

    def _spawn(self) -> None:
        # A stale lock of a killed conntrackd keeps a new one from starting.
        lock = self.ha.conntrackd_lock
        if os.path.exists(lock) and not self._lock_held(lock):
            with contextlib.suppress(OSError):
                os.unlink(lock)
        argv = conntrackd.argv(self.ha)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        log.info("conntrackd started (pid %d): %s", self.proc.pid, " ".join(argv))

    @staticmethod
    def _lock_held(lock: str) -> bool:
        import fcntl

        try:
            with open(lock, "a") as f:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(f, fcntl.LOCK_UN)
            return False
        except OSError:
            return True

    def _stop_child(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        log.info("conntrackd stopped")

    def tick(self) -> None:
        """Once a second: restart a dead conntrackd; every BULK_INTERVAL_S send the whole
        table (``conntrackd -B``). The kernel reports a flow only when its state changes,
        so without it a peer's copy of a busy UDP flow would time out there."""
        self.reap()
        self._resync_step()
        now = time.monotonic()
        if self.proc is None or now < self.next_bulk:
            return
        self.next_bulk = now + conntrackd.BULK_INTERVAL_S
        if now - self.started < 5:
            return  # conntrackd opens its socket after start
        try:
            subprocess.run(
                conntrackd.bulk_argv(self.ha), capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("conntrackd -B: %s", e)

    def _resync_step(self) -> None:
        """Coming back: ask the peers for their tables (``conntrackd -n``; they answer
        with a dump of their kernel table, the copies of our bindings included), watch the
        injected count settle, then announce as usual."""
        if self.resync is None or self.proc is None:
            return
        stats = None
        try:
            if not self.resync_asked:
                r = subprocess.run(
                    conntrackd.resync_argv(self.ha), capture_output=True, timeout=5, check=False
                )
                self.resync_asked = r.returncode == 0  # socket not up yet: next tick
            out = subprocess.run(
                conntrackd.stats_argv(self.ha),
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            stats = conntrackd.parse_stats(out.stdout) if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("conntrackd resync: %s", e)
        if not self.resync.update(time.monotonic(), stats):
            return
        late = f" (gave up after {self.resync.limit:.0f} s)" if self.resync.timed_out else ""
        log.info("conntrackd resync: %d entries from the peers%s", self.resync.received, late)
        self.resync = None
        if not self.own_plain:
            self.own_plain = True
            try:
                self._bird()
            except HaError as e:
                log.error("%s", e)
            log.info("announcing the Pref64 and our outer addresses")

    def reap(self) -> None:
        """SIGCHLD: restart conntrackd if it died."""
        p = self.proc
        if p is None or self.stopping:
            return
        rc = p.poll()
        if rc is None:
            return
        self.proc = None
        self.restarts += 1
        log.warning("conntrackd (pid %d) exited (%s); restarting", p.pid, _how(rc))
        if time.monotonic() - self.started < 1.0:
            time.sleep(1.0)  # do not spin on a conntrackd that dies at once
        try:
            self._spawn()
        except OSError as e:
            log.error("conntrackd: cannot start: %s", e)

    def status(self) -> dict[str, Any]:
        p = self.proc
        return {
            "node": self.ha.node,
            "peers": [x.name for x in self.ha.peers],
            "bird": self.last_bird,
            "conntrackd_pid": p.pid if p is not None and p.poll() is None else None,
            "conntrackd_restarts": self.restarts,
            "resync": "pending" if self.resync is not None else "done",
            "announcing": "yes" if self.own_plain else "held back until the resync is in",
        }


def _how(rc: int) -> str:
    return f"signal {-rc}" if rc < 0 else f"exit {rc}"


def dry_run_text(ha: HaSettings, tun: str) -> str:
    """What ``--dry-run`` prints for [ha]: both generated files and the missing tools."""
    lines = [
        "",
        f"# [ha] node {ha.node} (AS {ha.asn}), peers "
        + ", ".join(f"{p.name} ({', '.join(str(o.ipv4) for o in p.outer)})" for p in ha.peers),
        f"# bird2 configuration ({ha.bird_config}, then birdc -s {ha.bird_socket} configure)",
        bird.render_plat(ha, tun),
        f"# conntrackd configuration ({ha.conntrackd_config}; run as the PLAT's child)",
        conntrackd.render(ha),
    ]
    lines += [f"# {m}" for m in missing_tools()]
    return "\n".join(lines)
