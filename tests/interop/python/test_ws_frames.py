"""STOMP over WebSocket at the message level (websocket-client, no STOMP library):
frames split over several WebSocket messages, several frames in one message, and which
WebSocket opcode (text/binary) carries a MESSAGE."""

from __future__ import annotations

import time

import pytest
import websocket

WAIT = 10.0


class RawWs:
    """A STOMP 1.2 session over a raw WebSocket; frames are parsed from the byte stream."""

    def __init__(self, target, subprotocol: str | None = "v12.stomp"):
        self.ws = websocket.create_connection(
            target.ws_url, subprotocols=[subprotocol] if subprotocol else None, timeout=WAIT)
        self.buf = b""
        self.buf_opcodes: list[int] = []  # opcode of the WS message each pending byte came in (by frame start)
        self.frames: list[tuple[str, dict, bytes, int]] = []
        self.target = target

    def send_text(self, s: str):
        self.ws.send(s, websocket.ABNF.OPCODE_TEXT)

    def send_bytes(self, b: bytes):
        self.ws.send(b, websocket.ABNF.OPCODE_BINARY)

    def _pump(self, deadline: float):
        self.ws.settimeout(max(deadline - time.monotonic(), 0.05))
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError(f"WebSocket closed: {data!r}")
        if not self.buf.strip(b"\r\n"):
            self.start_opcode = opcode
            self.buf = b""
        self.buf += data
        self._parse()

    def _parse(self):
        while True:
            b = self.buf.lstrip(b"\r\n")  # heart-beats between frames
            if not b:
                self.buf = b""
                return
            head_end = b.find(b"\n\n")
            if head_end < 0:
                self.buf = b
                return
            lines = b[:head_end].decode().replace("\r", "").split("\n")
            cmd, headers = lines[0], {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.setdefault(k, v)
            start = head_end + 2
            if "content-length" in headers:
                n = int(headers["content-length"])
                if len(b) < start + n + 1:
                    self.buf = b
                    return
                body, rest = b[start:start + n], b[start + n + 1:]
            else:
                nul = b.find(b"\x00", start)
                if nul < 0:
                    self.buf = b
                    return
                body, rest = b[start:nul], b[nul + 1:]
            self.frames.append((cmd, headers, body, self.start_opcode))
            self.buf = rest
            if rest.strip(b"\r\n"):
                continue  # next frame started in the same WS message: same opcode
            return

    def expect(self, cmd: str, timeout: float = WAIT, **match):
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if f[0] == "ERROR":
                    raise AssertionError(f"server sent ERROR: {f[1]!r} {f[2]!r}")
                if f[0] == cmd and all(f[1].get(k.replace("_", "-")) == v for k, v in match.items()):
                    return self.frames.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {cmd} {match}; have {self.frames!r}")
            self._pump(deadline)

    def connect_frame(self) -> str:
        login, passcode = self.target.credentials("rawws")
        h = "accept-version:1.2\nhost:/\n"
        if login:
            h += f"login:{login}\n"
        if passcode:
            h += f"passcode:{passcode}\n"
        return f"CONNECT\n{h}\n\x00"

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


@pytest.fixture
def raw(target):
    made = []

    def make(**kw):
        r = RawWs(target, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_frame_split_over_several_ws_messages(raw, uniq):
    r = raw()
    f = r.connect_frame()
    for part in (f[:4], f[4:17], f[17:-1], f[-1:]):  # the NUL alone in the last message
        r.send_text(part)
    assert r.expect("CONNECTED")[1]["version"] == "1.2"
    dest = f"/queue/{uniq('split')}"
    sub = f"SUBSCRIBE\nid:s1\ndestination:{dest}\nack:auto\nreceipt:r1\n\n\x00"
    for i in range(0, len(sub), 7):
        r.send_text(sub[i:i + 7])
    r.expect("RECEIPT", receipt_id="r1")
    body = "split body " * 100
    send = f"SEND\ndestination:{dest}\ncontent-type:text/plain\nreceipt:r2\n\n{body}\x00"
    half = len(send) // 2
    r.send_text(send[:half])
    r.send_text(send[half:])
    r.expect("RECEIPT", receipt_id="r2")
    m = r.expect("MESSAGE")
    assert m[2].decode() == body


def test_several_frames_in_one_ws_message(raw, uniq):
    r = raw()
    dest = f"/queue/{uniq('batch')}"  # a queue: held even if the SENDs overtook the SUBSCRIBE
    batch = (r.connect_frame()
             + f"SUBSCRIBE\nid:s1\ndestination:{dest}\nack:auto\nreceipt:r1\n\n\x00"
             + f"SEND\ndestination:{dest}\n\none\x00\n"  # with an EOL (heart-beat) between frames
             + f"SEND\ndestination:{dest}\nreceipt:r2\n\ntwo\x00")
    r.send_text(batch)
    r.expect("CONNECTED")
    r.expect("RECEIPT", receipt_id="r1")
    r.expect("RECEIPT", receipt_id="r2")
    bodies = sorted(r.expect("MESSAGE")[2] for _ in range(2))
    assert bodies == [b"one", b"two"]


def test_text_body_comes_as_text_message(raw, uniq):
    r = raw()
    r.send_text(r.connect_frame())
    r.expect("CONNECTED")
    dest = f"/queue/{uniq('text')}"
    r.send_text(f"SUBSCRIBE\nid:s1\ndestination:{dest}\nack:auto\nreceipt:r1\n\n\x00")
    r.expect("RECEIPT", receipt_id="r1")
    r.send_text(f"SEND\ndestination:{dest}\ncontent-type:text/plain;charset=utf-8\n\nhéllo ✓\x00")
    cmd, headers, body, opcode = r.expect("MESSAGE")
    assert body.decode("utf-8") == "héllo ✓"
    assert opcode == websocket.ABNF.OPCODE_TEXT


def test_binary_body_comes_as_binary_message(raw, uniq, rabbitmq_differs):
    rabbitmq_differs("Web-STOMP sends every STOMP frame in a text WebSocket message (its ws_frame setting, "
                     "default text), even a body that is not UTF-8")
    r = raw()
    r.send_text(r.connect_frame())
    r.expect("CONNECTED")
    dest = f"/queue/{uniq('bin')}"
    r.send_text(f"SUBSCRIBE\nid:s1\ndestination:{dest}\nack:auto\nreceipt:r1\n\n\x00")
    r.expect("RECEIPT", receipt_id="r1")
    payload = bytes([0xFF, 0x00, 0xFE, 0x80, 0x01]) + bytes(range(256))
    frame = (f"SEND\ndestination:{dest}\ncontent-type:application/octet-stream\n"
             f"content-length:{len(payload)}\n\n").encode() + payload + b"\x00"
    r.send_bytes(frame)
    cmd, headers, body, opcode = r.expect("MESSAGE")
    assert body == payload
    assert int(headers["content-length"]) == len(payload)
    assert opcode == websocket.ABNF.OPCODE_BINARY
