"""A thin, test-friendly wrapper around stomp.py 9.x connections.

Every wait is bounded: frames arriving on stomp.py's receiver thread are recorded under one
condition variable, and the test thread waits on predicates with a timeout.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import stomp
from stomp.adapter.ws import WSTransport
from stomp.connect import BaseConnection, StompConnection10, StompConnection11
from stomp.protocol import Protocol10, Protocol11

WAIT = 10.0  # default bound for anything the server should do promptly

_ids = itertools.count(1)


class WSStompConnection11(StompConnection11):
    """STOMP 1.1 over WebSocket.

    stomp.py ships only a 1.2 WebSocket class (stomp.WSStompConnection); its WSTransport is
    version-agnostic, so this pairs it with Protocol11 exactly as WSStompConnection pairs it
    with Protocol12."""

    def __init__(self, host_and_ports, heartbeats=(0, 0), vhost=None, ws_path=None, header=None,
                 reconnect_attempts_max=1, timeout=None):
        transport = WSTransport(host_and_ports, reconnect_attempts_max=reconnect_attempts_max, timeout=timeout,
                                vhost=vhost, ws_path=ws_path, header=header)
        BaseConnection.__init__(self, transport)
        Protocol11.__init__(self, transport, heartbeats)


class WSStompConnection10(StompConnection10):
    """STOMP 1.0 over WebSocket (same pairing as above, with Protocol10)."""

    def __init__(self, host_and_ports, ws_path=None, header=None, reconnect_attempts_max=1, timeout=None):
        transport = WSTransport(host_and_ports, reconnect_attempts_max=reconnect_attempts_max, timeout=timeout,
                                ws_path=ws_path, header=header)
        BaseConnection.__init__(self, transport)
        Protocol10.__init__(self, transport)


SUBPROTOCOL = {"1.2": "v12.stomp", "1.1": "v11.stomp", "1.0": "v10.stomp"}


class ServerError(AssertionError):
    pass


class Client(stomp.ConnectionListener):
    """One STOMP session: a stomp.py connection plus everything it received."""

    def __init__(self, target, transport: str, version: str, user: str | None = None,
                 heartbeats=(0, 0), subprotocol: str | None = "auto", cond: threading.Condition | None = None,
                 credentials: tuple[str | None, str | None] | None = None, ws_header: dict | None = None):
        """`credentials` = (login, passcode) sent as they are (None leaves a header out); by default
        the target decides from `user` (Target.credentials). `ws_header` adds HTTP headers to the
        WebSocket upgrade request."""
        self.target, self.transport, self.version, self.user = target, transport, version, user
        self.credentials = credentials
        # Clients of one test may share a condition, to wait on all of them at once.
        self.cond = cond or threading.Condition()
        self.connected_frame = None
        self.messages: list = []  # MESSAGE frames, in arrival order
        self.receipts: set[str] = set()
        self.errors: list = []
        self.heartbeats_received = 0
        self.disconnected = threading.Event()
        self.sent_disconnect_receipt: str | None = None
        self._sub_ids = itertools.count(1)
        self._closed = False
        hb = tuple(heartbeats)
        if transport == "tcp":
            hp = [target.tcp]
            if version == "1.2":
                self.conn = stomp.Connection12(hp, heartbeats=hb, vhost="/", reconnect_attempts_max=1, timeout=WAIT)
            elif version == "1.1":
                self.conn = stomp.Connection11(hp, heartbeats=hb, vhost="/", reconnect_attempts_max=1, timeout=WAIT)
            else:
                assert hb == (0, 0), "STOMP 1.0 has no heart-beating"
                self.conn = stomp.Connection10(hp, reconnect_attempts_max=1, timeout=WAIT)
        elif transport == "ws":
            hp = [target.ws]
            proto = SUBPROTOCOL[version] if subprotocol == "auto" else subprotocol
            header = {"Sec-WebSocket-Protocol": proto} if proto else None
            if ws_header:
                header = {**(header or {}), **ws_header}
            self.offered_subprotocol = proto
            if version == "1.2":
                self.conn = stomp.WSStompConnection(hp, heartbeats=hb, vhost="/", ws_path=target.ws_path,
                                                    header=header, reconnect_attempts_max=1)
            elif version == "1.1":
                self.conn = WSStompConnection11(hp, heartbeats=hb, vhost="/", ws_path=target.ws_path, header=header)
            else:
                assert hb == (0, 0), "STOMP 1.0 has no heart-beating"
                self.conn = WSStompConnection10(hp, ws_path=target.ws_path, header=header)
        else:
            raise ValueError(transport)
        self.conn.set_listener("interop", self)

    # ---- stomp.py listener callbacks (receiver thread) ------------------------------------

    def on_connected(self, frame):
        with self.cond:
            self.connected_frame = frame
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats_received += 1
            self.cond.notify_all()

    def on_send(self, frame):
        if frame.cmd == "DISCONNECT":
            self.sent_disconnect_receipt = frame.headers.get("receipt")

    def on_disconnected(self):
        with self.cond:
            self.disconnected.set()
            self.cond.notify_all()

    # ---- waiting ---------------------------------------------------------------------------

    def wait_for(self, pred, timeout: float = WAIT, what: str = "condition", allow_errors: bool = False):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if not allow_errors and self.errors:
                    e = self.errors[0]
                    raise ServerError(f"{self.name}: server sent ERROR while waiting for {what}: "
                                      f"{e.headers!r} {e.body!r}")
                value = pred()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: timed out after {timeout:.1f} s waiting for {what}")
                self.cond.wait(left)

    @property
    def name(self) -> str:
        return f"[{self.user or 'anon'} {self.transport} {self.version}]"

    # ---- operations ------------------------------------------------------------------------

    def connect(self, timeout: float = WAIT, headers: dict | None = None):
        login, passcode = self.credentials if self.credentials is not None else self.target.credentials(self.user)
        self.conn.connect(login, passcode, wait=False, headers=headers or {})
        self.wait_for(lambda: self.connected_frame is not None or self.disconnected.is_set(), timeout, "CONNECTED",
                      allow_errors=True)
        if self.errors:
            raise ServerError(f"{self.name}: CONNECT refused: {self.errors[0].headers!r} {self.errors[0].body!r}")
        if self.connected_frame is None:
            raise AssertionError(f"{self.name}: connection closed before CONNECTED")
        return self.connected_frame

    def receipt(self) -> str:
        """A fresh receipt id; pass it on a frame, then wait_receipt(it)."""
        return f"r-{next(_ids)}-{uuid.uuid4().hex[:6]}"

    def wait_receipt(self, rid: str, timeout: float = WAIT):
        self.wait_for(lambda: rid in self.receipts, timeout, f"RECEIPT {rid}")

    def subscribe(self, destination: str, ack: str = "auto", sub_id: str | None = None, receipt: bool = True,
                  headers: dict | None = None) -> str:
        sub_id = sub_id or f"sub-{next(self._sub_ids)}"
        h = dict(headers or {})
        rid = None
        if receipt:
            rid = h["receipt"] = self.receipt()
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers=h)
        if rid:
            self.wait_receipt(rid)
        return sub_id

    def unsubscribe(self, sub_id: str, receipt: bool = True):
        h = {}
        rid = None
        if receipt:
            rid = h["receipt"] = self.receipt()
        self.conn.unsubscribe(id=sub_id, headers=h)
        if rid:
            self.wait_receipt(rid)

    def send(self, destination: str, body, headers: dict | None = None, receipt: bool = False,
             transaction: str | None = None, content_type: str | None = None):
        h = dict(headers or {})
        rid = None
        if receipt:
            rid = h["receipt"] = self.receipt()
        if transaction:
            h["transaction"] = transaction
        self.conn.send(destination, body, content_type=content_type, headers=h)
        if rid:
            self.wait_receipt(rid)

    def ack(self, frame, receipt: bool = True, transaction: str | None = None):
        self._ack_or_nack("ack", frame, receipt, transaction)

    def nack(self, frame, receipt: bool = True, transaction: str | None = None):
        assert self.version != "1.0", "NACK does not exist in STOMP 1.0"
        self._ack_or_nack("nack", frame, receipt, transaction)

    def _ack_or_nack(self, kind, frame, receipt, transaction):
        rid = self.receipt() if receipt else None
        fn = getattr(self.conn, kind)
        if self.version == "1.2":
            fn(frame.headers["ack"], transaction=transaction, receipt=rid)
        elif self.version == "1.1":
            fn(frame.headers["message-id"], frame.headers["subscription"], transaction=transaction, receipt=rid)
        else:
            fn(frame.headers["message-id"], transaction=transaction, receipt=rid)
        if rid:
            self.wait_receipt(rid)

    def begin(self, receipt: bool = True) -> str:
        tx = f"tx-{next(_ids)}"
        rid = self.receipt() if receipt else None
        self.conn.begin(tx, headers={"receipt": rid} if rid else None)
        if rid:
            self.wait_receipt(rid)
        return tx

    def commit(self, tx: str, receipt: bool = True):
        rid = self.receipt() if receipt else None
        self.conn.commit(tx, headers={"receipt": rid} if rid else None)
        if rid:
            self.wait_receipt(rid)

    def abort(self, tx: str, receipt: bool = True):
        rid = self.receipt() if receipt else None
        self.conn.abort(tx, headers={"receipt": rid} if rid else None)
        if rid:
            self.wait_receipt(rid)

    def send_raw_frame(self, cmd: str, headers: dict, body: str = ""):
        self.conn.send_frame(cmd, headers, body)

    # ---- messages ----------------------------------------------------------------------------

    def msgs(self, sub_id: str | None = None, destination: str | None = None) -> list:
        with self.cond:
            return [m for m in self.messages
                    if (sub_id is None or m.headers.get("subscription") == sub_id)
                    and (destination is None or m.headers.get("destination") == destination)]

    def wait_messages(self, n: int, sub_id: str | None = None, timeout: float = WAIT, destination: str | None = None):
        self.wait_for(lambda: len(self.msgs(sub_id, destination)) >= n, timeout,
                      f"{n} MESSAGE(s)" + (f" on {sub_id}" if sub_id else ""))
        return self.msgs(sub_id, destination)

    def wait_body(self, body: str, timeout: float = WAIT):
        def find():
            for m in self.messages:
                if m.body == body:
                    return m
            return None
        return self.wait_for(find, timeout, f"MESSAGE with body {body!r}")

    def bodies(self, sub_id: str | None = None) -> list[str]:
        return [m.body for m in self.msgs(sub_id)]

    # ---- teardown ----------------------------------------------------------------------------

    def disconnect(self, timeout: float = WAIT) -> str:
        """DISCONNECT with a receipt (stomp.py adds one); returns the receipt id once it arrived."""
        self.conn.disconnect()  # without receipt= it does not block; stomp.py still attaches one
        rid = self.sent_disconnect_receipt
        assert rid, "stomp.py sent DISCONNECT without a receipt"
        self.wait_receipt(rid, timeout)
        self._closed = True
        return rid

    def leave(self, timeout: float = WAIT):
        """End the session (DISCONNECT) and wait until the connection is closed, receipt or not.

        For tests where ending the session is a means, not the subject (see
        test_disconnect_with_receipt for the receipt itself)."""
        self.conn.disconnect()
        assert self.disconnected.wait(timeout), f"{self.name}: still connected {timeout} s after DISCONNECT"
        self._closed = True

    def close(self):
        """Best-effort, bounded cleanup."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.connected_frame is not None and not self.disconnected.is_set() and not self.errors:
                self.conn.disconnect()
                self.disconnected.wait(3)
        except Exception:
            pass
        try:
            if not self.disconnected.is_set():
                self.conn.transport.running = False
                self.conn.transport.disconnect_socket()
        except Exception:
            pass
