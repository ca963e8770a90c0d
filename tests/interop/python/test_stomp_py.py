"""stomp.py (9.x) against the server: TCP and WebSocket, STOMP 1.2 / 1.1 / 1.0.

Synchronisation is by receipts and bounded waits; the only sleeps are short ones (<= 1 s) that
show that something did NOT happen, and the heart-beat idling test.
"""

from __future__ import annotations

import threading
import time

import pytest

from stomp_client import WAIT, Client

ABSENCE = 0.5  # how long we watch for a message that must not come


def needs(version: str, minimum: str, why: str):
    if tuple(map(int, version.split("."))) < tuple(map(int, minimum.split("."))):
        pytest.skip(f"{why} (STOMP {version})")


# ----------------------------------------------------------------------------------------------
# Connecting
# ----------------------------------------------------------------------------------------------


def test_connected_frame(clients, transport, version):
    c = clients("alice", transport, version)
    h = c.connected_frame.headers
    assert h.get("version") == version, h
    assert h.get("server"), h
    assert h.get("session"), h
    if version != "1.0":
        # We offered 0,0: no heart-beating either way, whatever the server would like.
        assert "heart-beat" in h, h
    if transport == "ws":
        # The handshake answered with the subprotocol we offered.
        resp = c.conn.transport.socket.getheaders() or {}
        assert resp.get("sec-websocket-protocol") == c.offered_subprotocol, resp


def test_websocket_without_subprotocol(clients, uniq):
    c = clients("alice", "ws", "1.2", subprotocol=None)
    assert c.connected_frame.headers.get("version") == "1.2"
    dest = f"/topic/{uniq('nosub')}"
    c.subscribe(dest)
    c.send(dest, "plain ws", receipt=True)
    assert c.wait_messages(1)[0].body == "plain ws"


@pytest.mark.parley_only(reason="user-name header and the server's fixed heart-beat 10000,10000")
def test_connected_parley_headers(clients, transport, version, uniq):
    user = uniq("alice")
    c = clients(user, transport, version)
    h = c.connected_frame.headers
    assert h.get("user-name") == user, h
    if version != "1.0":
        assert h.get("heart-beat", "").replace(" ", "") == "10000,10000", h


@pytest.mark.parley_only(reason="guest names for sessions without login")
def test_no_login_gets_generated_guest_name(clients, transport):
    a = clients(None, transport, "1.2")
    b = clients(None, transport, "1.2")
    na, nb = a.connected_frame.headers.get("user-name"), b.connected_frame.headers.get("user-name")
    assert na and nb, (a.connected_frame.headers, b.connected_frame.headers)
    assert na != nb, "two anonymous sessions got the same generated name"


# ----------------------------------------------------------------------------------------------
# Basic messaging
# ----------------------------------------------------------------------------------------------


def test_subscribe_send_receive(clients, transport, version, uniq):
    """Topic fan-out: two subscribers (one on the other transport) each get every message."""
    other = "ws" if transport == "tcp" else "tcp"
    s1 = clients("bob", transport, version)
    s2 = clients("carol", other, "1.2")
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('chat')}"
    sub1 = s1.subscribe(dest)
    sub2 = s2.subscribe(dest)
    bodies = ["hello", "héllo wörld ✓", "x" * 5000]
    for b in bodies:
        p.send(dest, b, content_type="text/plain", headers={"x-plain": "value-1"})
    p.send(dest, "last", receipt=True)
    got1 = s1.wait_messages(len(bodies) + 1, sub1)
    got2 = s2.wait_messages(len(bodies) + 1, sub2)
    assert [m.body for m in got1] == bodies + ["last"]
    assert [m.body for m in got2] == bodies + ["last"]
    m = got1[0]
    h = m.headers
    assert h["destination"] == dest
    assert h["subscription"] == sub1
    assert h.get("message-id")
    assert h.get("content-type", "").startswith("text/plain"), h
    assert h.get("x-plain") == "value-1", h
    assert int(h["content-length"]) == len(bodies[0].encode()), h
    assert int(got1[1].headers["content-length"]) == len(bodies[1].encode())
    assert len({x.headers["message-id"] for x in got1}) == len(got1), "message-ids repeat"


@pytest.mark.parley_only(reason="sender and timestamp headers on MESSAGE")
def test_message_parley_headers(clients, transport, version, uniq):
    sender = uniq("alice")
    s = clients(uniq("bob"), transport, version)
    p = clients(sender, transport, version)
    dest = f"/topic/{uniq('h')}"
    s.subscribe(dest)
    before = int(time.time() * 1000)
    p.send(dest, "stamped", receipt=True)
    m = s.wait_messages(1)[0]
    after = int(time.time() * 1000)
    assert m.headers.get("sender") == sender, m.headers
    ts = int(m.headers["timestamp"])
    assert before - 5000 <= ts <= after + 5000, (before, ts, after)
    assert "content-type" not in m.headers, "sender gave no content-type"


def test_receipts(clients, transport, version, uniq):
    c = clients("alice", transport, version)
    dest = f"/queue/{uniq('rcpt')}"
    sub = c.subscribe(dest, ack="client")  # SUBSCRIBE receipt
    c.send(dest, "r1", receipt=True)  # SEND receipt
    m = c.wait_messages(1)[0]
    c.ack(m, receipt=True)  # ACK receipt
    tx = c.begin(receipt=True)  # BEGIN receipt
    c.abort(tx, receipt=True)  # ABORT receipt
    c.unsubscribe(sub, receipt=True)  # UNSUBSCRIBE receipt
    assert not c.errors


def test_disconnect_with_receipt(clients, transport, version, uniq, rabbitmq_differs):
    wait = rabbitmq_differs("Web-STOMP answers DISCONNECT+receipt with a WebSocket close (1000 'STOMP died'), "
                            "never the RECEIPT", when=transport == "ws")
    c = clients("alice", transport, version)
    dest = f"/topic/{uniq('bye')}"
    c.subscribe(dest)
    rid = c.disconnect(timeout=wait)
    assert rid in c.receipts
    assert c.disconnected.wait(WAIT), "connection still open after the DISCONNECT receipt"
    # The server is fine afterwards; the old subscription is gone with the session.
    p = clients("bob", transport, version)
    p.send(dest, "after", receipt=True)


def test_unsubscribe_stops_delivery(clients, transport, version, uniq):
    s = clients("bob", transport, version)
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('unsub')}"
    sub1 = s.subscribe(dest)
    sub2 = s.subscribe(dest)
    p.send(dest, "both", receipt=True)
    s.wait_messages(1, sub1)
    s.wait_messages(1, sub2)
    s.unsubscribe(sub1)
    p.send(dest, "only-sub2", receipt=True)
    s.wait_for(lambda: "only-sub2" in s.bodies(sub2), what="only-sub2 on sub2")
    time.sleep(ABSENCE)
    assert s.bodies(sub1) == ["both"]
    assert s.bodies(sub2) == ["both", "only-sub2"]


# ----------------------------------------------------------------------------------------------
# Queues and acknowledgement
# ----------------------------------------------------------------------------------------------


def test_queue_shared_by_two_consumers(clients, transport, version, uniq):
    cond = threading.Condition()
    a = clients("bob", transport, version, cond=cond)
    b = clients("carol", transport, version, cond=cond)
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('work')}"
    a.subscribe(dest)
    b.subscribe(dest)
    n = 20
    for i in range(n):
        p.send(dest, f"job-{i}", receipt=(i == n - 1))
    want = {f"job-{i}" for i in range(n)}
    a.wait_for(lambda: set(a.bodies()) | set(b.bodies()) >= want, what="all 20 jobs across both consumers")
    time.sleep(ABSENCE)
    ga, gb = a.bodies(), b.bodies()
    assert sorted(ga + gb) == sorted(want), "a message was delivered twice (or an extra one arrived)"
    assert ga and gb, f"one consumer got everything: {len(ga)} vs {len(gb)}"
    # Each consumer sees its share in send order.
    assert ga == sorted(ga, key=lambda s: int(s.split("-")[1]))
    assert gb == sorted(gb, key=lambda s: int(s.split("-")[1]))


def test_client_ack_is_cumulative(clients, transport, version, uniq):
    """ack=client: acking the 3rd of 3 messages acks all three; a new consumer gets none of them."""
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('cumul')}"
    # Sent before anyone subscribes: the queue holds them.
    for i in (1, 2, 3):
        p.send(dest, f"m{i}", receipt=True)
    c = clients("bob", transport, version)
    sub = c.subscribe(dest, ack="client")
    got = c.wait_messages(3, sub)
    assert [m.body for m in got] == ["m1", "m2", "m3"]
    if version == "1.2":
        assert all(m.headers.get("ack") for m in got), [m.headers for m in got]
    c.ack(got[2], receipt=True)
    c.leave()
    # Reconnect (a new session of the same user): nothing is redelivered; a marker proves the
    # queue is live and would have delivered earlier messages first.
    c2 = clients("bob", transport, version)
    sub2 = c2.subscribe(dest, ack="client")
    p.send(dest, "marker", receipt=True)
    c2.wait_for(lambda: "marker" in c2.bodies(), what="marker")
    assert c2.bodies(sub2) == ["marker"], "acked messages were redelivered"


def test_client_ack_unacked_are_redelivered(clients, transport, version, uniq):
    """ack=client: acking the 2nd of 3 acks 1-2 only; the 3rd returns when the consumer leaves."""
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('cumul2')}"
    c = clients("bob", transport, version)
    sub = c.subscribe(dest, ack="client")
    for i in (1, 2, 3):
        p.send(dest, f"m{i}", receipt=True)
    got = c.wait_messages(3, sub)
    c.ack(got[1], receipt=True)
    c.leave()
    c2 = clients("bob", transport, version)
    sub2 = c2.subscribe(dest, ack="client")
    p.send(dest, "marker", receipt=True)
    c2.wait_for(lambda: "marker" in c2.bodies(), what="marker")
    assert c2.bodies(sub2) == ["m3", "marker"]


def test_nack_redelivers_to_other_consumer(clients, transport, version, uniq):
    needs(version, "1.1", "NACK and client-individual do not exist in STOMP 1.0")
    cond = threading.Condition()
    a = clients("bob", transport, version, cond=cond)
    b = clients("carol", transport, version, cond=cond)
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('nack')}"
    sub_a = a.subscribe(dest, ack="client-individual")
    p.send(dest, "hot potato", receipt=True)
    first = a.wait_messages(1, sub_a)[0]
    assert first.body == "hot potato"
    if version == "1.2":
        assert first.headers.get("ack"), first.headers
    # Only now does B join, so the first delivery certainly went to A.
    sub_b = b.subscribe(dest, ack="client-individual")
    a.nack(first, receipt=True)
    # The message must come to B. (A broker may hand it back to A first; A keeps NACKing.)
    handled = 1
    deadline = time.monotonic() + WAIT
    with cond:
        while not b.msgs(sub_b):
            for m in a.messages[handled:]:
                handled += 1
                a.nack(m, receipt=False)
            left = deadline - time.monotonic()
            assert left > 0, "NACKed message never reached the second consumer"
            assert handled <= 10, "the NACKed message keeps coming back to the consumer that NACKed it"
            cond.wait(left)
    got = b.msgs(sub_b)[0]
    assert got.body == "hot potato"
    b.ack(got, receipt=True)
    time.sleep(ABSENCE)
    assert [m.body for m in b.msgs(sub_b)] == ["hot potato"]
    a_redeliveries = handled - 1
    # RabbitMQ hands a NACKed message back to the NACKing consumer once before the other gets it;
    # Parley's contract is that it goes to another consumer.
    if b.target.is_parley:
        assert a_redeliveries == 0, f"the NACKed message went back to the NACKing consumer {a_redeliveries} time(s)"


def test_client_individual_ack(clients, transport, version, uniq):
    needs(version, "1.1", "client-individual does not exist in STOMP 1.0")
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('indiv')}"
    c = clients("bob", transport, version)
    sub = c.subscribe(dest, ack="client-individual")
    for i in (1, 2, 3):
        p.send(dest, f"m{i}", receipt=True)
    got = c.wait_messages(3, sub)
    c.ack(got[1], receipt=True)  # only m2
    c.leave()
    c2 = clients("bob", transport, version)
    sub2 = c2.subscribe(dest, ack="client-individual")
    p.send(dest, "marker", receipt=True)
    c2.wait_for(lambda: "marker" in c2.bodies(), what="marker")
    assert c2.bodies(sub2) == ["m1", "m3", "marker"]


def test_consumer_disconnect_redelivers(clients, transport, version, uniq):
    cond = threading.Condition()
    a = clients("bob", transport, version, cond=cond)
    b = clients("carol", transport, version, cond=cond)
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('gone')}"
    a.subscribe(dest, ack="client")
    p.send(dest, "orphan", receipt=True)
    a.wait_messages(1)
    sub_b = b.subscribe(dest, ack="client")
    a.leave()
    got = b.wait_messages(1, sub_b)[0]
    assert got.body == "orphan"


# ----------------------------------------------------------------------------------------------
# Transactions
# ----------------------------------------------------------------------------------------------


def test_transaction_commit(clients, transport, version, uniq):
    s = clients("bob", transport, version)
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('txc')}"
    s.subscribe(dest)
    tx = p.begin()
    # No receipts on the transactional SENDs (RabbitMQ answers those only at COMMIT, see
    # test_transactional_send_receipt_before_commit): the receipt of the next, plain SEND on the
    # same connection shows they were processed.
    p.send(dest, "t1", transaction=tx)
    p.send(dest, "t2", transaction=tx)
    # A non-transactional message sent afterwards overtakes them: until COMMIT they are held.
    p.send(dest, "outside", receipt=True)
    s.wait_for(lambda: "outside" in s.bodies(), what="the non-transactional message")
    assert s.bodies() == ["outside"], "transactional SENDs were delivered before COMMIT"
    p.commit(tx)
    s.wait_messages(3)
    assert s.bodies() == ["outside", "t1", "t2"]


def test_transaction_abort(clients, transport, version, uniq):
    s = clients("bob", transport, version)
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('txa')}"
    s.subscribe(dest)
    tx = p.begin()
    p.send(dest, "a1", transaction=tx)
    p.send(dest, "a2", transaction=tx)
    p.abort(tx)
    # Frames of one connection are handled in order: once this arrives, a1/a2 would have too.
    p.send(dest, "after-abort", receipt=True)
    s.wait_for(lambda: "after-abort" in s.bodies(), what="after-abort")
    assert s.bodies() == ["after-abort"], "aborted SENDs were delivered"


def test_transactional_send_receipt_before_commit(clients, transport, version, uniq, rabbitmq_differs):
    """A receipt acknowledges that the frame was processed, which for a SEND in a transaction
    means staged: it comes at once, not at COMMIT."""
    wait = rabbitmq_differs("the RECEIPT of a SEND inside a transaction is only sent at COMMIT (and never "
                            "after ABORT); the MESSAGE then also carries the sender's receipt and transaction headers")
    s = clients("bob", transport, version)
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('txr')}"
    s.subscribe(dest)
    tx = p.begin()
    rid = p.receipt()
    p.send(dest, "staged", transaction=tx, headers={"receipt": rid})
    p.wait_receipt(rid, timeout=wait)
    assert s.bodies() == []
    p.commit(tx)
    assert s.wait_messages(1)[0].body == "staged"


def test_ack_inside_transaction(clients, transport, version, uniq):
    """An ACK inside an aborted transaction is void; inside a committed one it holds."""
    p = clients("alice", transport, version)
    dest = f"/queue/{uniq('txack')}"
    c = clients("bob", transport, version)
    sub = c.subscribe(dest, ack="client")
    p.send(dest, "m1", receipt=True)
    m1 = c.wait_messages(1, sub)[0]
    tx = c.begin()
    c.ack(m1, transaction=tx, receipt=True)
    c.abort(tx)
    c.leave()
    # m1 was not acknowledged: the next consumer gets it.
    c2 = clients("bob", transport, version)
    sub2 = c2.subscribe(dest, ack="client")
    again = c2.wait_messages(1, sub2)[0]
    assert again.body == "m1"
    tx = c2.begin()
    c2.ack(again, transaction=tx, receipt=True)
    c2.commit(tx)
    c2.leave()
    c3 = clients("bob", transport, version)
    sub3 = c3.subscribe(dest, ack="client")
    p.send(dest, "marker", receipt=True)
    c3.wait_for(lambda: "marker" in c3.bodies(), what="marker")
    assert c3.bodies(sub3) == ["marker"], "the ACK committed in a transaction did not hold"


# ----------------------------------------------------------------------------------------------
# User destinations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parley_only(reason="/user/queue/x <- /user/<name>/queue/x routing by login name")
def test_user_destination_reaches_all_sessions_of_that_user(clients, transport, version, uniq):
    cond = threading.Condition()
    alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")
    other = "ws" if transport == "tcp" else "tcp"
    a1 = clients(alice, transport, version, cond=cond)
    a2 = clients(alice, other, "1.2", cond=cond)
    b = clients(bob, transport, version, cond=cond)
    sender = clients(carol, transport, version)
    for c in (a1, a2, b):
        c.subscribe("/user/queue/inbox")
    # An unrelated user destination name must not match either.
    a1.subscribe("/user/queue/other")
    sender.send(f"/user/{alice}/queue/inbox", "for alice", receipt=True)
    sender.send(f"/user/{bob}/queue/inbox", "for bob", receipt=True)
    for c in (a1, a2):
        m = c.wait_body("for alice")
        assert m.headers["destination"] == "/user/queue/inbox", m.headers
        assert m.headers.get("sender") == carol, m.headers
    mb = b.wait_body("for bob")
    assert mb.headers["destination"] == "/user/queue/inbox"
    time.sleep(ABSENCE)
    assert b.bodies() == ["for bob"], "bob got alice's message"
    assert a1.bodies() == ["for alice"] and a2.bodies() == ["for alice"], (a1.bodies(), a2.bodies())


# ----------------------------------------------------------------------------------------------
# Header escaping
# ----------------------------------------------------------------------------------------------

TRICKY = {
    "x-colon": "a:b:c",
    "x-newline": "line1\nline2",
    "x-backslash": "C:\\dir\\file",
    "x-mixed": "k:v\\n\nend:",
    "x-utf8": "naïve ✓",
}


def test_custom_header_values_round_trip(clients, transport, version, uniq):
    needs(version, "1.1", "header escaping is defined from STOMP 1.1 on")
    s = clients("bob", transport, version)
    p = clients("alice", transport, version)
    dest = f"/topic/{uniq('esc')}"
    s.subscribe(dest)
    p.send(dest, "escaped", headers=dict(TRICKY), receipt=True)
    m = s.wait_messages(1)[0]
    for k, v in TRICKY.items():
        assert m.headers.get(k) == v, (k, m.headers.get(k), v)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def _provoke_error(c):
    rid = c.receipt()
    c.send_raw_frame("SUBSCRIBE", {"destination": "/nowhere/x", "id": "bad", "ack": "auto", "receipt": rid})
    err = c.wait_for(lambda: c.errors and c.errors[0], what="ERROR", allow_errors=True)
    return rid, err


def test_error_frame_has_message(clients, transport, version):
    c = clients("alice", transport, version)
    _, err = _provoke_error(c)
    assert err.headers.get("message"), err.headers


def test_error_frame_has_receipt_id_then_close(clients, transport, version, rabbitmq_differs):
    wait = rabbitmq_differs("ERROR for a SUBSCRIBE to an unknown destination has no receipt-id, and the "
                            "connection stays open (RabbitMQ treats it as non-fatal)")
    c = clients("alice", transport, version)
    rid, err = _provoke_error(c)
    assert c.disconnected.wait(wait), "server did not close the connection after ERROR"
    assert err.headers.get("receipt-id") == rid, err.headers


# ----------------------------------------------------------------------------------------------
# Heart-beats (slow: one per transport, 1.2 only)
# ----------------------------------------------------------------------------------------------

IDLE = 25.0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_heartbeats_keep_idle_connection_alive(clients, transport, uniq):
    c = clients("alice", transport, "1.2", heartbeats=(10000, 10000))
    assert c.connected_frame.headers.get("heart-beat", "").replace(" ", "") == "10000,10000", \
        c.connected_frame.headers
    dest = f"/topic/{uniq('hb')}"
    t0 = time.monotonic()
    # Idle: nothing but heart-beats for IDLE seconds. The connection must survive (both sides
    # must see the other's beats: the server's 10 s, the client's own 10 s with stomp.py's 1.5x grace).
    closed = c.disconnected.wait(IDLE)
    assert not closed, f"connection closed after {time.monotonic() - t0:.1f} s of heart-beating"
    assert c.heartbeats_received >= 2, f"only {c.heartbeats_received} server heart-beats in {IDLE:.0f} s"
    c.subscribe(dest)
    c.send(dest, "still alive", receipt=True)
    assert c.wait_messages(1)[0].body == "still alive"


# ----------------------------------------------------------------------------------------------
# Server lifecycle (Parley only: spawns its own server)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parley_only(reason="spawns and SIGTERMs its own server")
def test_sigterm_disconnects_clients_and_exits(fresh_parley, transport):
    server = fresh_parley()
    t = server.target()
    c = Client(t, transport, "1.2", user="alice")
    try:
        c.connect()
        c.subscribe("/topic/shutdown")
        rc = server.stop()
        assert rc == 0, f"parley exited with {rc} on SIGTERM"
        assert c.disconnected.wait(WAIT), "client still connected after the server exited"
    finally:
        c.close()
