"""Fixtures for the stomp.py interop suite.

Targets (env INTEROP_TARGET):
  parley (default)  spawn `$PARLEY_BIN serve --http 127.0.0.1:0 --stomp-tcp 127.0.0.1:0 --allow-guests`
                    once per session (plus per-test servers where a test needs its own), read both
                    ports from stdout. Guests are allowed there because the protocol tests log in
                    by name only; the account tests (test_auth.py) also get a strict server
                    (`strict_target`, the server's default: accounts only).
  rabbitmq          the local RabbitMQ STOMP plugins (tcp 127.0.0.1:61613, ws://127.0.0.1:15674/ws,
                    guest/guest): only for checking the suite's expectations. Tests marked
                    `parley_only` are skipped there, with the marker's reason.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from stomp_client import WAIT, Client  # noqa: E402

TARGET = os.environ.get("INTEROP_TARGET", "parley")
if TARGET not in ("parley", "rabbitmq"):
    raise RuntimeError(f"INTEROP_TARGET must be parley or rabbitmq, not {TARGET!r}")

STARTUP_TIMEOUT = 10.0
# Parley gives WebSockets up to 10 s (--shutdown-grace) to answer its 1001 close on SIGTERM.
STOP_TIMEOUT = 20.0


def _die_with_parent():
    """In the child, before exec: get SIGTERM if the test process dies (no orphaned servers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "parley_only(reason): relies on behaviour only Parley has (skipped with INTEROP_TARGET=rabbitmq)",
    )
    config.addinivalue_line("markers", "slow: takes tens of seconds (heart-beat idling)")


def pytest_collection_modifyitems(config, items):
    if TARGET == "parley":
        return
    for item in items:
        marker = item.get_closest_marker("parley_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "Parley-only behaviour")
            item.add_marker(pytest.mark.skip(reason=f"parley-only: {reason}"))


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the clients connect, and how they log in."""

    kind: str  # "parley" | "rabbitmq"
    tcp: tuple[str, int]
    ws: tuple[str, int]
    ws_path: str
    server: "ParleyServer | None" = None

    @property
    def is_parley(self) -> bool:
        return self.kind == "parley"

    def credentials(self, user: str | None) -> tuple[str | None, str | None]:
        """(login, passcode) for a logical user. RabbitMQ only knows guest/guest."""
        if self.kind == "rabbitmq":
            return "guest", "guest"
        return user, None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.ws[0]}:{self.ws[1]}{self.ws_path}"

    @property
    def http_url(self) -> str:
        return f"http://{self.ws[0]}:{self.ws[1]}"

    def post_json(self, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict | None, dict]:
        """POST a JSON body (urllib, no Origin, no cookies): (status, JSON answer or None, headers)."""
        req = urllib.request.Request(
            self.http_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json", "accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as resp:
                status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), dict(e.headers)
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        return status, answer, hdrs

    def register(self, username: str, password: str) -> None:
        """POST /api/register; the account must be new."""
        status, answer, _ = self.post_json("/api/register", {"username": username, "password": password})
        assert status == 201, f"register {username}: HTTP {status} {answer!r}"

    def login(self, username: str, password: str) -> str:
        """POST /api/login; returns the access token (a JWT)."""
        status, answer, _ = self.post_json("/api/login", {"username": username, "password": password})
        assert status == 200, f"login {username}: HTTP {status} {answer!r}"
        assert answer and isinstance(answer.get("access_token"), str), answer
        return answer["access_token"]


@dataclass
class ParleyServer:
    """One `parley serve` process; its ports come from its stdout lines."""

    bin: str
    http_addr: str = "127.0.0.1:0"
    stomp_addr: str = "127.0.0.1:0"
    log_path: Path | None = None
    # --allow-guests --guests-create-rooms (the protocol tests connect by name and make rooms by
    # subscribing); False: accounts only
    guests: bool = True
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    http_port: int = 0
    stomp_port: int = 0
    stomp_tls_port: int = 0  # with --tls-cert in extra_args
    _lines: "queue.Queue[str | None]" = field(default_factory=queue.Queue)

    def start(self) -> "ParleyServer":
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="parley-interop-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--http", self.http_addr, "--stomp-tcp", self.stomp_addr,
             "--data", tempfile.mkdtemp(prefix="parley-interop-data-"),
             *(["--allow-guests", "--guests-create-rooms", "--guest-queues"] if self.guests else []), *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        http_re = re.compile(r"^parley listening on https?://127\.0\.0\.1:(\d+)$")
        # With TLS a third line names STOMP over TLS's port.
        tls = "--tls-cert" in self.extra_args
        want = 3 if tls else 2
        stomp_re = re.compile(r"^parley stomp listening on tcp://127\.0\.0\.1:(\d+)$")
        got = []
        while len(got) < want:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.01)) if left > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError(
                    f"parley did not print both listening lines within {STARTUP_TIMEOUT:.0f} s "
                    f"(got {got!r}); stderr: {self.log_path}\n{self.log_tail()}"
                )
            got.append(line)
        m1, m2 = http_re.match(got[0]), stomp_re.match(got[1])
        if not (m1 and m2):
            self.stop()
            raise RuntimeError(f"unexpected parley stdout lines {got!r}")
        self.http_port, self.stomp_port = int(m1.group(1)), int(m2.group(1))
        if tls:
            m3 = re.match(r"^parley stomp-tls listening on tcp://127\.0\.0\.1:(\d+)$", got[2])
            if not m3:
                self.stop()
                raise RuntimeError(f"unexpected parley stdout lines {got!r}")
            self.stomp_tls_port = int(m3.group(1))
        return self

    def _pump(self):
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._lines.put(None)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"parley did not exit within {timeout} s of SIGTERM")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def target(self) -> Target:
        return Target("parley", ("127.0.0.1", self.stomp_port), ("127.0.0.1", self.http_port), "/stomp", self)


def parley_bin() -> str:
    path = os.environ.get("PARLEY_BIN")
    if not path:
        pytest.exit("PARLEY_BIN is not set (run tests/interop/run.sh, or export it)", returncode=2)
    if not os.access(path, os.X_OK):
        pytest.exit(f"PARLEY_BIN={path} is not an executable", returncode=2)
    return path


@pytest.fixture(scope="session")
def target(tmp_path_factory):
    if TARGET == "rabbitmq":
        host = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
        yield Target(
            "rabbitmq",
            (host, int(os.environ.get("RABBITMQ_STOMP_PORT", "61613"))),
            (host, int(os.environ.get("RABBITMQ_WEB_STOMP_PORT", "15674"))),
            "/ws",
        )
        return
    server = ParleyServer(parley_bin(), log_path=tmp_path_factory.getbasetemp() / "parley-session.log").start()
    try:
        yield server.target()
    finally:
        rc = server.stop()
        if rc not in (0, None):
            print(f"\nparley (session server) exited with {rc}; log {server.log_path}:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def strict_target(tmp_path_factory):
    """A second Parley on its defaults: no guests, accounts only (Parley-only tests use it)."""
    if TARGET != "parley":
        pytest.skip("parley-only: accounts")
    server = ParleyServer(parley_bin(), log_path=tmp_path_factory.getbasetemp() / "parley-strict.log",
                          guests=False).start()
    try:
        yield server.target()
    finally:
        server.stop()


@pytest.fixture
def fresh_parley(tmp_path):
    """Per-test Parley servers (for tests that restart one). Call it to start one."""
    servers: list[ParleyServer] = []

    def start(**kw) -> ParleyServer:
        s = ParleyServer(parley_bin(), log_path=tmp_path / f"parley-{len(servers)}.log", **kw).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure against Parley, attach the tail of the session server's stderr."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and TARGET == "parley":
        for name in ("target", "strict_target"):
            t = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(t, Target) and t.server is not None:
                rep.sections.append((f"parley stderr, {name} (tail)", t.server.log_tail()))


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

TRANSPORTS = ["tcp", "ws"]
VERSIONS = ["1.2", "1.1", "1.0"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture(params=VERSIONS)
def version(request):
    return request.param


@pytest.fixture
def clients(target):
    """Factory: clients(user=None, transport="tcp", version="1.2", ...) -> connected Client.

    Every client is closed at teardown (bounded)."""
    made: list[Client] = []

    def make(user: str | None = None, transport: str = "tcp", version: str = "1.2", connect: bool = True,
             tgt: Target | None = None, **kw) -> Client:
        c = Client(tgt or target, transport, version, user=user, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def rabbitmq_differs(request, target):
    """rabbitmq_differs(reason, when=True): on RabbitMQ this test is expected to FAIL (strict xfail),
    because RabbitMQ behaves differently from Parley's contract in the way `reason` says. On Parley
    it must pass. Keeps every known disagreement explicit and checked."""

    def mark(reason: str, when: bool = True) -> float:
        """Returns the timeout the test should use for the step that differs (short on RabbitMQ,
        where it is known to time out)."""
        if when and target.kind == "rabbitmq":
            request.node.add_marker(pytest.mark.xfail(reason=f"RabbitMQ differs: {reason}", strict=True))
            return 2.0
        return WAIT

    return mark


@pytest.fixture
def uniq():
    """unique(prefix) -> a destination-safe unique name (letters, digits, - _ .)."""
    run = uuid.uuid4().hex[:8]
    counter = iter(range(1_000_000))

    def make(prefix: str = "n") -> str:
        return f"interop-{prefix}-{run}-{next(counter)}"

    return make
