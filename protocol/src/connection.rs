//! The server side of a WebSocket connection as a sans-IO state machine.
//!
//! Call order: feed received bytes with [`Connection::read`] until it returns `Ok(None)`; queue
//! messages with the `send*` methods; drain [`Connection::poll_transmit`] onto the socket; once
//! [`Connection::is_closed`] is true and the output is drained, close the TCP connection (the
//! server closes first, RFC 6455 §7.1.1).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{self, DeflateParams, Deflater, Inflater};
use crate::error::ProtocolError;
use crate::frame::{self, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// Payloads up to this size are copied out of the read buffer rather than sharing it, so a
/// small message does not pin the whole buffer and the buffer can be reused in place.
const COPY_THRESHOLD: usize = 4096;
/// Output pieces up to this size are copied into one buffer with the pieces around them: a
/// vectored write then hands the kernel a few large buffers instead of many small ones, and no
/// small piece is reference-counted. Larger pieces (a shared frame worth not copying) are queued
/// as they are.
pub const COALESCE_MAX: usize = 512;
/// Smallest allocation of the coalescing buffer.
const COALESCE_CHUNK: usize = 4096;
/// Most read-buffer space reserved at once for a partial frame.
const MAX_RESERVE_STEP: usize = 64 * 1024;

/// Limits on what a peer may send; exceeding one fails the connection with 1009.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame payload accepted (default 1 MiB).
    pub max_frame_size: usize,
    /// Largest message after reassembly and inflation (default 1 MiB).
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        }
    }
}

impl Limits {
    /// Limits with the given frame and message maxima, in bytes.
    pub fn new(max_frame_size: usize, max_message_size: usize) -> Self {
        Self {
            max_frame_size,
            max_message_size,
        }
    }
}

/// The largest deflate stream `n` bytes can become: zlib's `deflateBound` (its worst case, on
/// data that does not compress and goes out in stored blocks), with room for the sync flush's
/// empty block and a margin.
fn deflate_bound(n: usize) -> usize {
    n.saturating_add(n >> 12)
        .saturating_add(n >> 14)
        .saturating_add(n >> 25)
        .saturating_add(64)
}

/// A complete data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message; the payload is valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The message's bytes.
    pub fn payload(&self) -> &Bytes {
        match self {
            Self::Text(b) | Self::Binary(b) => b,
        }
    }

    fn opcode(&self) -> OpCode {
        match self {
            Self::Text(_) => OpCode::Text,
            Self::Binary(_) => OpCode::Binary,
        }
    }
}

/// Something the peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole data message.
    Message(Message),
    /// A ping; the pong is already queued.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (`None`: no status code); the answer is already queued.
    Close(Option<CloseFrame>),
}

/// The connection no longer accepts messages to send: a close frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the WebSocket connection is closing")]
pub struct ConnectionClosed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseState {
    Open,
    /// We sent a close and wait for the peer's.
    Sent,
    /// Both sides sent a close, or the connection failed.
    Done,
}

/// A frame whose header was parsed and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct PendingFrame {
    header: FrameHeader,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
    /// Payload bytes already unmasked (and UTF-8 checked) in place.
    unmasked: usize,
    check_utf8: bool,
}

/// A fragmented or compressed message being put together.
struct Assembly {
    opcode: OpCode,
    compressed: bool,
    buf: Vec<u8>,
}

/// permessage-deflate on one connection: boxed, as most connections never negotiate it.
struct DeflateState {
    params: DeflateParams,
    /// Only with context takeover, made on first use; otherwise messages are compressed alone
    /// by the thread's compressor ([`deflate::compress_alone`]).
    deflater: Option<Deflater>,
    inflater: Inflater,
}

/// The server side of one WebSocket connection.
pub struct Connection {
    limits: Bounds,
    deflate: Option<Box<DeflateState>>,
    pending: Option<Box<PendingFrame>>,
    /// Boxed: only a fragmented or compressed message needs it, and only while it arrives.
    message: Option<Box<Assembly>>,
    utf8: Utf8Validator,
    close: CloseState,
    out: VecDeque<Bytes>,
    /// Small output after everything in `out`, not yet sealed into it ([`COALESCE_MAX`]).
    tail: BytesMut,
    out_len: usize,
}

/// [`Limits`] as every connection holds them: 32-bit (8 bytes, not 16); a limit of 4 GiB or
/// more is `u32::MAX` bytes.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    max_frame_size: u32,
    max_message_size: u32,
}

impl Bounds {
    fn max_frame_size(self) -> usize {
        self.max_frame_size as usize
    }

    fn max_message_size(self) -> usize {
        self.max_message_size as usize
    }
}

impl From<Limits> for Bounds {
    fn from(limits: Limits) -> Self {
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            max_frame_size: narrow(limits.max_frame_size),
            max_message_size: narrow(limits.max_message_size),
        }
    }
}

impl Connection {
    /// A connection after a successful handshake, with the negotiated deflate parameters.
    pub fn new(limits: Limits, deflate: Option<DeflateParams>) -> Self {
        Self {
            limits: limits.into(),
            deflate: deflate.map(|params| {
                Box::new(DeflateState {
                    params,
                    deflater: None,
                    inflater: Inflater::new(&params),
                })
            }),
            pending: None,
            message: None,
            utf8: Utf8Validator::default(),
            close: CloseState::Open,
            out: VecDeque::new(),
            tail: BytesMut::new(),
            out_len: 0,
        }
    }

    /// Decodes the next event from `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when more input is needed (or after the close handshake, when input is
    /// ignored). Partial frames stay in `buf`, already unmasked and checked as far as they go, so
    /// invalid UTF-8 is caught as soon as it arrives. On `Err` the connection has failed: the
    /// close frame with the matching code is queued, and the caller should flush and disconnect.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            if self.close == CloseState::Done {
                buf.clear();
                return Ok(None);
            }
            // A box kept from an earlier read is reused; a frame read whole is never boxed.
            let mut boxed = self.pending.take();
            let mut pending = match boxed.as_deref() {
                Some(p) => *p,
                None => match FrameHeader::parse(buf) {
                    Ok(None) => return Ok(None),
                    Ok(Some((header, header_len))) => match self.check_header(header, header_len) {
                        Ok(p) => p,
                        Err(e) => return Err(self.fail(e)),
                    },
                    Err(e) => return Err(self.fail(e)),
                },
            };
            let end = pending.header_len + pending.payload_len;
            let available = buf.len().min(end);
            let done = pending.header_len + pending.unmasked;
            if available > done {
                let fresh = &mut buf[done..available];
                apply_mask(fresh, pending.mask, pending.unmasked);
                if pending.check_utf8 && self.utf8.feed(fresh).is_err() {
                    return Err(self.fail(ProtocolError::InvalidUtf8));
                }
                pending.unmasked = available - pending.header_len;
            }
            if buf.len() < end {
                // Room for more of this frame (plus the next header, so one read can finish
                // it), grown as data arrives: a header alone must not make us reserve a whole
                // max-size frame.
                buf.reserve((end - buf.len() + MAX_HEADER_LEN).min(MAX_RESERVE_STEP));
                // Boxed only while a frame is still arriving: an idle connection keeps 8 bytes.
                match &mut boxed {
                    Some(b) => **b = pending,
                    None => boxed = Some(Box::new(pending)),
                }
                self.pending = boxed;
                return Ok(None);
            }
            let payload = if pending.payload_len <= COPY_THRESHOLD {
                let payload = Bytes::copy_from_slice(&buf[pending.header_len..end]);
                buf.advance(end);
                payload
            } else {
                let mut frame = buf.split_to(end);
                frame.advance(pending.header_len);
                frame.freeze()
            };
            match self.on_frame(pending.header, payload) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Applies every rule that the header alone decides, before any payload is buffered.
    fn check_header(
        &self,
        h: FrameHeader,
        header_len: usize,
    ) -> Result<PendingFrame, ProtocolError> {
        let mask = h.mask.ok_or(ProtocolError::UnmaskedFrameFromClient)?;
        let first_data_frame = matches!(h.opcode, OpCode::Text | OpCode::Binary);
        if h.rsv2 || h.rsv3 || (h.rsv1 && !(self.deflate.is_some() && first_data_frame)) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooBig(h.payload_len));
            }
        } else {
            match (h.opcode, &self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
            // A compressed frame may hold up to a whole frame's worth of data, plus deflate's
            // overhead on data that does not compress; inflation enforces the message limit.
            let compressed = self.message.as_ref().map_or(h.rsv1, |m| m.compressed);
            let max_frame = if compressed {
                deflate_bound(self.limits.max_frame_size())
            } else {
                self.limits.max_frame_size()
            };
            if h.payload_len > max_frame as u64 {
                return Err(ProtocolError::FrameTooBig {
                    size: h.payload_len,
                    max: max_frame,
                });
            }
        }
        // Bounded by the checks above (125, or a frame maximum which is a usize).
        let payload_len = h.payload_len as usize;
        let (message_opcode, compressed, so_far) = match &self.message {
            Some(m) => (m.opcode, m.compressed, m.buf.len()),
            None => (h.opcode, h.rsv1, 0),
        };
        if !h.opcode.is_control()
            && !compressed
            && so_far + payload_len > self.limits.max_message_size()
        {
            let size = (so_far + payload_len) as u64;
            return Err(ProtocolError::MessageTooBig {
                size,
                max: self.limits.max_message_size(),
            });
        }
        Ok(PendingFrame {
            header: h,
            mask,
            header_len,
            payload_len,
            unmasked: 0,
            check_utf8: !h.opcode.is_control() && !compressed && message_opcode == OpCode::Text,
        })
    }

    fn on_frame(&mut self, h: FrameHeader, payload: Bytes) -> Result<Option<Event>, ProtocolError> {
        match h.opcode {
            OpCode::Ping => {
                if self.close == CloseState::Open {
                    self.queue_frame(OpCode::Pong, false, payload.clone());
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload))),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                if self.close == CloseState::Open {
                    // Echo the status code (§5.5.1); an empty close is answered with an empty one.
                    let echo = frame
                        .as_ref()
                        .map(|f| Bytes::copy_from_slice(&f.code.as_u16().to_be_bytes()));
                    self.queue_frame(OpCode::Close, false, echo.unwrap_or_default());
                }
                self.close = CloseState::Done;
                Ok(Some(Event::Close(frame)))
            }
            OpCode::Text | OpCode::Binary if h.fin && !h.rsv1 => {
                if h.opcode == OpCode::Text {
                    self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                Ok(Some(Event::Message(make_message(h.opcode, payload))))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => self.on_fragment(h, &payload),
        }
    }

    fn on_fragment(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
    ) -> Result<Option<Event>, ProtocolError> {
        let max = self.limits.max_message_size();
        let msg = self.message.get_or_insert_with(|| {
            Box::new(Assembly {
                opcode: h.opcode,
                compressed: h.rsv1,
                buf: Vec::new(),
            })
        });
        let is_text = msg.opcode == OpCode::Text;
        if msg.compressed {
            let Some(d) = self.deflate.as_deref_mut() else {
                return Err(ProtocolError::ReservedBitsSet);
            };
            let start = msg.buf.len();
            if h.fin && d.params.client_no_context_takeover && d.inflater.is_idle() {
                // The whole message is here and stands alone: the thread's inflater serves.
                deflate::inflate_alone(payload, &mut msg.buf, max, &d.params)?;
            } else {
                d.inflater.inflate(payload, &mut msg.buf, max)?;
                if h.fin {
                    d.inflater.finish_message(&mut msg.buf, max)?;
                }
            }
            if is_text {
                self.utf8
                    .feed(&msg.buf[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            msg.buf.extend_from_slice(payload);
        }
        if !h.fin {
            return Ok(None);
        }
        if is_text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let msg = self
            .message
            .take()
            .map(|m| make_message(m.opcode, Bytes::from(m.buf)));
        Ok(msg.map(Event::Message))
    }

    /// Fails the connection: queue the close frame for `error` and stop reading.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.close == CloseState::Open {
            let frame = CloseFrame {
                code: error.close_code(),
                reason: error.to_string(),
            };
            self.queue_frame(OpCode::Close, false, Bytes::from(frame.payload()));
        }
        self.close = CloseState::Done;
        self.pending = None;
        self.message = None;
        error
    }

    /// Queues a data message, compressed if permessage-deflate was negotiated.
    pub fn send(&mut self, message: &Message) -> Result<(), ConnectionClosed> {
        self.send_data(message.opcode(), message.payload().clone())
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ConnectionClosed> {
        self.send_data(OpCode::Text, Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: Bytes) -> Result<(), ConnectionClosed> {
        self.send_data(OpCode::Binary, data)
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ConnectionClosed> {
        self.ensure_open()?;
        match self.deflate.as_deref_mut() {
            Some(d) if d.params.server_no_context_takeover => {
                let compressed = Bytes::from(deflate::compress_alone(&payload, &d.params));
                self.queue_frame(opcode, true, compressed);
            }
            Some(d) => {
                let deflater = d.deflater.get_or_insert_with(|| Deflater::new(&d.params));
                let compressed = Bytes::from(deflater.compress(&payload));
                self.queue_frame(opcode, true, compressed);
            }
            None => self.queue_frame(opcode, false, payload),
        }
        Ok(())
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_deref().map(|d| &d.params)
    }

    /// Queues a frame already encoded by [`frame::encode`], shared with other connections.
    ///
    /// It is sent as is: compressed if its RSV1 says so, otherwise uncompressed even where
    /// permessage-deflate was negotiated (allowed: RSV1 clear means "not compressed", RFC 7692
    /// §6).
    pub fn send_encoded(&mut self, frame: Bytes) -> Result<(), ConnectionClosed> {
        self.ensure_open()?;
        self.push_out(frame);
        Ok(())
    }

    /// Queues bytes already framed (as [`Connection::send_encoded`]) by copying them: for
    /// pieces up to [`COALESCE_MAX`] that the caller holds by reference.
    pub fn send_copied(&mut self, bytes: &[u8]) -> Result<(), ConnectionClosed> {
        self.ensure_open()?;
        self.push_copied(bytes);
        Ok(())
    }

    /// Queues bytes already framed (as [`Connection::send_encoded`]) that the caller keeps:
    /// copied when small ([`COALESCE_MAX`]), shared (one reference more) when larger.
    pub fn send_shared(&mut self, bytes: &Bytes) -> Result<(), ConnectionClosed> {
        self.ensure_open()?;
        if bytes.len() <= COALESCE_MAX {
            self.push_copied(bytes);
        } else {
            self.push_out(bytes.clone());
        }
        Ok(())
    }

    /// Queues a ping; the payload is cut to 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ConnectionClosed> {
        self.ensure_open()?;
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        self.queue_frame(OpCode::Ping, false, Bytes::copy_from_slice(payload));
        Ok(())
    }

    /// Starts the closing handshake; does nothing if a close was already sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.close == CloseState::Open {
            let frame = CloseFrame {
                code,
                reason: reason.to_owned(),
            };
            self.queue_frame(OpCode::Close, false, Bytes::from(frame.payload()));
            self.close = CloseState::Sent;
        }
    }

    /// The next bytes to write to the socket, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            self.seal_all();
        }
        let bytes = self.out.pop_front()?;
        self.out_len -= bytes.len();
        Some(bytes)
    }

    /// Everything queued to write, in order, taken at once: the queue's storage goes with it,
    /// so a connection with nothing to send keeps none.
    pub fn take_transmit(&mut self) -> VecDeque<Bytes> {
        self.seal_all();
        self.out_len = 0;
        std::mem::take(&mut self.out)
    }

    /// Gives back the unwritten end of what [`Connection::take_transmit`] took, to go out before
    /// anything queued since: a writer stopped mid-way loses nothing.
    pub fn untake_transmit(&mut self, mut rest: VecDeque<Bytes>) {
        if rest.is_empty() {
            return;
        }
        self.seal_all();
        self.out_len += rest.iter().map(Bytes::len).sum::<usize>();
        rest.append(&mut self.out);
        self.out = rest;
    }

    /// Bytes queued and not yet taken by [`Connection::poll_transmit`] or
    /// [`Connection::take_transmit`] (what was given back with
    /// [`Connection::untake_transmit`] counts again).
    pub fn buffered_output(&self) -> usize {
        self.out_len
    }

    /// Both close frames were exchanged, or the connection failed: flush, then disconnect.
    pub fn is_closed(&self) -> bool {
        self.close == CloseState::Done
    }

    /// A close frame was sent (by [`Connection::close`]) and the peer's answer is awaited.
    pub fn is_closing(&self) -> bool {
        self.close == CloseState::Sent
    }

    fn ensure_open(&self) -> Result<(), ConnectionClosed> {
        match self.close {
            CloseState::Open => Ok(()),
            _ => Err(ConnectionClosed),
        }
    }

    fn queue_frame(&mut self, opcode: OpCode, compressed: bool, payload: Bytes) {
        let header = FrameHeader {
            rsv1: compressed,
            ..FrameHeader::server(opcode, payload.len())
        };
        if payload.len() <= COALESCE_MAX {
            let before = self.tail.len();
            frame::encode_into(&mut self.tail, &header, &payload);
            self.out_len += self.tail.len() - before;
        } else if payload.len() <= COPY_THRESHOLD {
            let mut out = BytesMut::new();
            frame::encode_into(&mut out, &header, &payload);
            self.push_out(out.freeze());
        } else {
            // Large payloads are not copied: the header goes out as its own buffer.
            let mut head = BytesMut::with_capacity(header.encoded_len());
            header.write(&mut head);
            self.push_out(head.freeze());
            self.push_out(payload);
        }
    }

    fn push_out(&mut self, bytes: Bytes) {
        if bytes.len() <= COALESCE_MAX {
            return self.push_copied(&bytes);
        }
        self.seal();
        self.out_len += bytes.len();
        self.out.push_back(bytes);
    }

    fn push_copied(&mut self, bytes: &[u8]) {
        if self.tail.capacity() - self.tail.len() < bytes.len() {
            self.tail.reserve(bytes.len().max(COALESCE_CHUNK));
        }
        self.tail.extend_from_slice(bytes);
        self.out_len += bytes.len();
    }

    /// Moves the small output gathered so far into the queue, keeping the buffer's spare room
    /// for what follows.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.out.push_back(sealed);
        }
    }

    /// [`Connection::seal`], and lets go of the spare room too: a connection with nothing to
    /// send keeps no buffer.
    fn seal_all(&mut self) {
        self.seal();
        self.tail = BytesMut::new();
    }
}

fn make_message(opcode: OpCode, payload: Bytes) -> Message {
    if opcode == OpCode::Text {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::DeflateParams;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// A masked frame as a client sends it.
    fn client_frame(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv1,
            mask: Some(MASK),
            ..FrameHeader::server(opcode, payload.len())
        };
        let mut out = BytesMut::new();
        frame::encode_into(&mut out, &header, payload);
        out.to_vec()
    }

    fn text(payload: &str) -> Vec<u8> {
        client_frame(OpCode::Text, true, false, payload.as_bytes())
    }

    fn conn() -> Connection {
        Connection::new(Limits::new(1024, 4096), None)
    }

    fn deflate_params() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
        }
    }

    /// Feeds all of `input`, collecting events until an error or the input runs out.
    fn feed(conn: &mut Connection, input: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
        let mut buf = BytesMut::from(input);
        let mut events = Vec::new();
        loop {
            match conn.read(&mut buf) {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    fn output(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
        out
    }

    /// The server frames in `out`: (opcode, rsv1, payload).
    fn server_frames(mut out: &[u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            let (h, len) = FrameHeader::parse(out).unwrap().unwrap();
            assert!(h.mask.is_none(), "server frames are unmasked");
            let end = len + h.payload_len as usize;
            frames.push((h.opcode, h.rsv1, out[len..end].to_vec()));
            out = &out[end..];
        }
        frames
    }

    /// The close code the server sent, if its output ends in a close frame.
    fn sent_close_code(conn: &mut Connection) -> Option<u16> {
        let frames = server_frames(&output(conn));
        let (op, _, payload) = frames.last()?;
        (*op == OpCode::Close && payload.len() >= 2)
            .then(|| u16::from_be_bytes([payload[0], payload[1]]))
    }

    fn fails_with(input: &[u8], expected: ProtocolError, code: u16) {
        let mut c = conn();
        let (_, err) = feed(&mut c, input);
        assert_eq!(err, Some(expected));
        assert!(c.is_closed());
        assert_eq!(sent_close_code(&mut c), Some(code));
    }

    #[test]
    fn decodes_a_masked_text_message() {
        let mut c = conn();
        let (events, err) = feed(&mut c, &text("Hello"));
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![Event::Message(Message::Text(Bytes::from_static(b"Hello")))]
        );
    }

    #[test]
    fn unmasked_frame_is_1002() {
        let mut unmasked = BytesMut::new();
        frame::encode_into(&mut unmasked, &FrameHeader::server(OpCode::Text, 2), b"hi");
        fails_with(&unmasked, ProtocolError::UnmaskedFrameFromClient, 1002);
    }

    #[test]
    fn reserved_opcode_is_1002() {
        fails_with(
            &[0x83, 0x80, 1, 2, 3, 4],
            ProtocolError::ReservedOpcode(3),
            1002,
        );
        fails_with(
            &[0x8b, 0x80, 1, 2, 3, 4],
            ProtocolError::ReservedOpcode(0xb),
            1002,
        );
    }

    #[test]
    fn rsv_bits_without_extension_are_1002() {
        for bits in [0x40u8, 0x20, 0x10] {
            fails_with(
                &[0x81 | bits, 0x80, 1, 2, 3, 4],
                ProtocolError::ReservedBitsSet,
                1002,
            );
        }
    }

    #[test]
    fn rsv1_is_only_allowed_on_first_data_frames_with_deflate() {
        let mut c = Connection::new(Limits::default(), Some(deflate_params()));
        let (_, err) = feed(&mut c, &client_frame(OpCode::Ping, true, true, b""));
        assert_eq!(err, Some(ProtocolError::ReservedBitsSet));
        let mut c = Connection::new(Limits::default(), Some(deflate_params()));
        let mut input = client_frame(OpCode::Text, false, false, b"a");
        input.extend(client_frame(OpCode::Continuation, true, true, b"b"));
        assert_eq!(feed(&mut c, &input).1, Some(ProtocolError::ReservedBitsSet));
    }

    #[test]
    fn oversized_control_frame_is_1002() {
        fails_with(
            &client_frame(OpCode::Ping, true, false, &[0; 126]),
            ProtocolError::ControlFrameTooBig(126),
            1002,
        );
    }

    #[test]
    fn fragmented_control_frame_is_1002() {
        fails_with(
            &client_frame(OpCode::Ping, false, false, b"x"),
            ProtocolError::FragmentedControlFrame,
            1002,
        );
    }

    #[test]
    fn continuation_without_message_is_1002() {
        fails_with(
            &client_frame(OpCode::Continuation, true, false, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        );
    }

    #[test]
    fn new_message_inside_fragmented_one_is_1002() {
        let mut input = client_frame(OpCode::Text, false, false, b"a");
        input.extend(text("b"));
        fails_with(&input, ProtocolError::ExpectedContinuation, 1002);
    }

    #[test]
    fn control_frames_may_interleave_fragments() {
        let mut c = conn();
        let mut input = client_frame(OpCode::Text, false, false, b"Hel");
        input.extend(client_frame(OpCode::Ping, true, false, b"p"));
        input.extend(client_frame(OpCode::Continuation, true, false, b"lo"));
        let (events, err) = feed(&mut c, &input);
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                Event::Ping(Bytes::from_static(b"p")),
                Event::Message(Message::Text(Bytes::from_static(b"Hello")))
            ]
        );
    }

    #[test]
    fn ping_is_answered_with_same_payload_and_pong_is_not() {
        let mut c = conn();
        feed(
            &mut c,
            &client_frame(OpCode::Ping, true, false, b"are you there"),
        );
        assert_eq!(
            server_frames(&output(&mut c)),
            vec![(OpCode::Pong, false, b"are you there".to_vec())]
        );
        let (events, _) = feed(
            &mut c,
            &client_frame(OpCode::Pong, true, false, b"unsolicited"),
        );
        assert_eq!(
            events,
            vec![Event::Pong(Bytes::from_static(b"unsolicited"))]
        );
        assert!(output(&mut c).is_empty());
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        let mut c = conn();
        let mut input = client_frame(OpCode::Text, false, false, "κόσμε".as_bytes());
        input.extend(client_frame(
            OpCode::Continuation,
            false,
            false,
            b"\xed\xa0\x80",
        ));
        // The final fragment never arrives: the error must not wait for it.
        let (_, err) = feed(&mut c, &input);
        assert_eq!(err, Some(ProtocolError::InvalidUtf8));
        assert_eq!(sent_close_code(&mut c), Some(1007));
    }

    #[test]
    fn invalid_utf8_fails_inside_a_partial_frame() {
        let mut c = conn();
        let frame = client_frame(
            OpCode::Text,
            true,
            false,
            b"hello \xff and more text after it",
        );
        // Only the header and the first 8 payload bytes have arrived.
        let (_, err) = feed(&mut c, &frame[..2 + 4 + 8]);
        assert_eq!(err, Some(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn truncated_utf8_at_message_end_is_1007() {
        fails_with(
            &client_frame(OpCode::Text, true, false, b"ok \xe2\x82"),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }

    #[test]
    fn close_payload_rules() {
        fails_with(
            &client_frame(OpCode::Close, true, false, &[3]),
            ProtocolError::InvalidClosePayload,
            1002,
        );
        fails_with(
            &client_frame(OpCode::Close, true, false, &[0x03, 0xed]),
            ProtocolError::InvalidCloseCode(1005),
            1002,
        );
        fails_with(
            &client_frame(OpCode::Close, true, false, &[0x03, 0xe8, 0xff]),
            ProtocolError::InvalidCloseReason,
            1002,
        );
    }

    #[test]
    fn close_is_echoed_and_completes_the_handshake() {
        let mut c = conn();
        let (events, err) = feed(
            &mut c,
            &client_frame(OpCode::Close, true, false, &[0x0f, 0xa0, b'o', b'k']),
        );
        assert_eq!(err, None);
        let frame = CloseFrame {
            code: CloseCode::from_wire(4000).unwrap(),
            reason: "ok".into(),
        };
        assert_eq!(events, vec![Event::Close(Some(frame))]);
        assert!(c.is_closed());
        assert_eq!(
            server_frames(&output(&mut c)),
            vec![(OpCode::Close, false, vec![0x0f, 0xa0])]
        );
        assert_eq!(c.send_text("late"), Err(ConnectionClosed));
        // Whatever follows the close is ignored.
        assert_eq!(feed(&mut c, &text("after")), (vec![], None));
    }

    #[test]
    fn empty_close_gets_empty_close() {
        let mut c = conn();
        feed(&mut c, &client_frame(OpCode::Close, true, false, b""));
        assert_eq!(
            server_frames(&output(&mut c)),
            vec![(OpCode::Close, false, vec![])]
        );
    }

    #[test]
    fn server_initiated_close_waits_for_the_peer() {
        let mut c = conn();
        c.close(CloseCode::GOING_AWAY, "shutting down");
        assert!(c.is_closing() && !c.is_closed());
        assert_eq!(sent_close_code(&mut c), Some(1001));
        feed(
            &mut c,
            &client_frame(OpCode::Close, true, false, &[0x03, 0xe9]),
        );
        assert!(c.is_closed());
        assert!(output(&mut c).is_empty(), "no second close frame");
    }

    #[test]
    fn frame_over_the_limit_is_1009_before_its_payload_arrives() {
        let frame = client_frame(OpCode::Binary, true, false, &[0; 2000]);
        fails_with(
            &frame[..8],
            ProtocolError::FrameTooBig {
                size: 2000,
                max: 1024,
            },
            1009,
        );
    }

    #[test]
    fn a_header_alone_does_not_reserve_a_whole_frame() {
        let mut c = Connection::new(Limits::new(1 << 20, 1 << 20), None);
        let header = FrameHeader {
            mask: Some(MASK),
            ..FrameHeader::server(OpCode::Binary, 1 << 20)
        };
        let mut buf = BytesMut::new();
        header.write(&mut buf);
        assert_eq!(c.read(&mut buf), Ok(None));
        assert!(
            buf.capacity() <= 128 * 1024,
            "reserved {} for an empty frame",
            buf.capacity()
        );
    }

    #[test]
    fn message_over_the_limit_is_1009() {
        let mut input = client_frame(OpCode::Binary, false, false, &[0; 1000]);
        for _ in 0..4 {
            input.extend(client_frame(OpCode::Continuation, false, false, &[0; 1000]));
        }
        fails_with(
            &input,
            ProtocolError::MessageTooBig {
                size: 5000,
                max: 4096,
            },
            1009,
        );
    }

    #[test]
    fn compressed_messages_are_inflated_and_replies_compressed() {
        let mut c = Connection::new(Limits::default(), Some(deflate_params()));
        // RFC 7692 §7.2.3.1 "Hello", then the same split over two frames.
        let mut input = client_frame(
            OpCode::Text,
            true,
            true,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        input.extend(client_frame(OpCode::Text, false, true, &[0xf2, 0x48, 0xcd]));
        input.extend(client_frame(
            OpCode::Continuation,
            true,
            false,
            &[0xc9, 0xc9, 0x07, 0x00],
        ));
        let (events, err) = feed(&mut c, &input);
        assert_eq!(err, None);
        let hello = Event::Message(Message::Text(Bytes::from_static(b"Hello")));
        assert_eq!(events, vec![hello.clone(), hello]);
        c.send_text("Hello").unwrap();
        let frames = server_frames(&output(&mut c));
        assert_eq!(frames.len(), 1);
        assert!(frames[0].1, "RSV1 set on a compressed reply");
    }

    #[test]
    fn compressed_bomb_is_1009() {
        let mut deflater = Deflater::new(&deflate_params());
        let bomb = deflater.compress(&vec![b'a'; 1 << 20]);
        let mut c = Connection::new(Limits::new(1 << 20, 64 * 1024), Some(deflate_params()));
        let (_, err) = feed(&mut c, &client_frame(OpCode::Binary, true, true, &bomb));
        assert!(
            matches!(err, Some(ProtocolError::MessageTooBig { max: 65536, .. })),
            "{err:?}"
        );
        assert_eq!(sent_close_code(&mut c), Some(1009));
    }

    #[test]
    fn incompressible_message_of_the_limit_fits_in_one_compressed_frame() {
        // Pseudo-random bytes: deflate can only store them, so the frame is larger than the
        // message. A message of exactly the limit must still be accepted.
        let mut x: u32 = 0x9e37_79b9;
        let data: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let compressed = Deflater::new(&deflate_params()).compress(&data);
        assert!(compressed.len() > data.len(), "{}", compressed.len());
        let limit = Limits::new(data.len(), data.len());
        let mut c = Connection::new(limit.clone(), Some(deflate_params()));
        let (events, err) = feed(
            &mut c,
            &client_frame(OpCode::Binary, true, true, &compressed),
        );
        assert_eq!(err, None);
        assert_eq!(events, vec![Event::Message(Message::Binary(data.into()))]);
        // Past the bound, a compressed frame is still refused from its header.
        let mut c = Connection::new(limit, Some(deflate_params()));
        let too_big = vec![0u8; deflate_bound(64 * 1024) + 1];
        let (_, err) = feed(&mut c, &client_frame(OpCode::Binary, true, true, &too_big));
        assert!(
            matches!(err, Some(ProtocolError::FrameTooBig { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn one_byte_at_a_time_decodes_like_whole() {
        let mut input = text("first");
        input.extend(client_frame(OpCode::Binary, false, false, &[1, 2, 3]));
        input.extend(client_frame(OpCode::Ping, true, false, b"p"));
        input.extend(client_frame(OpCode::Continuation, true, false, &[4; 300]));
        let (whole, _) = feed(&mut conn(), &input);
        let mut c = conn();
        let mut buf = BytesMut::new();
        let mut trickled = Vec::new();
        for byte in input {
            buf.extend_from_slice(&[byte]);
            while let Some(e) = c.read(&mut buf).unwrap() {
                trickled.push(e);
            }
        }
        assert_eq!(whole.len(), 3);
        assert_eq!(whole, trickled);
    }

    #[test]
    fn shared_frames_are_sent_verbatim() {
        let shared = frame::encode(OpCode::Text, &[b'x'; COALESCE_MAX + 1]);
        let mut a = conn();
        let mut b = conn();
        a.send_encoded(shared.clone()).unwrap();
        b.send_encoded(shared.clone()).unwrap();
        let out_a = a.poll_transmit().unwrap();
        assert_eq!(out_a.as_ptr(), shared.as_ptr(), "same bytes, not a copy");
        assert_eq!(b.poll_transmit().unwrap(), shared);
    }

    #[test]
    fn small_output_is_gathered_into_few_buffers_in_order() {
        let large = frame::encode(OpCode::Binary, &[b'L'; COALESCE_MAX + 1]);
        let mut c = conn();
        c.send_encoded(frame::encode(OpCode::Text, b"one")).unwrap();
        c.send_copied(&frame::encode(OpCode::Text, b"two")).unwrap();
        c.send(&Message::Text(Bytes::from_static(b"three")))
            .unwrap();
        c.send_encoded(large.clone()).unwrap();
        c.ping(b"four").unwrap();
        c.send_encoded(frame::encode(OpCode::Text, b"five"))
            .unwrap();
        let total = c.buffered_output();
        let queued = c.take_transmit();
        assert_eq!(queued.len(), 3, "small, large, small: {queued:?}");
        assert_eq!(
            queued[1].as_ptr(),
            large.as_ptr(),
            "the large frame is shared"
        );
        assert_eq!(queued.iter().map(Bytes::len).sum::<usize>(), total);
        assert_eq!(c.buffered_output(), 0);
        let out: Vec<u8> = queued.iter().flat_map(|b| b.to_vec()).collect();
        let frames = server_frames(&out);
        let payloads: Vec<&[u8]> = frames.iter().map(|(_, _, p)| &p[..]).collect();
        assert_eq!(
            payloads,
            [
                &b"one"[..],
                b"two",
                b"three",
                &[b'L'; COALESCE_MAX + 1],
                b"four",
                b"five"
            ]
        );
        assert_eq!(c.tail.capacity(), 0, "nothing kept once taken");
    }

    #[test]
    fn output_given_back_goes_out_first_and_is_counted() {
        let mut c = conn();
        c.send_encoded(frame::encode(OpCode::Text, b"one")).unwrap();
        let mut taken = c.take_transmit();
        // A writer got two bytes of it out, then stopped.
        let written = taken[0].split_to(2);
        c.send_encoded(frame::encode(OpCode::Text, b"two")).unwrap();
        let later = c.buffered_output();
        let unwritten = taken[0].len();
        c.untake_transmit(taken);
        assert_eq!(c.buffered_output(), later + unwritten);
        let mut out = written.to_vec();
        out.extend(c.take_transmit().iter().flat_map(|b| b.to_vec()));
        let payloads: Vec<Vec<u8>> = server_frames(&out)
            .into_iter()
            .map(|(_, _, p)| p.to_vec())
            .collect();
        assert_eq!(payloads, [&b"one"[..], b"two"]);
        assert_eq!(c.buffered_output(), 0);
    }

    #[test]
    fn shared_output_is_copied_when_small_and_referenced_when_large() {
        let small = frame::encode(OpCode::Text, b"small");
        let large = frame::encode(OpCode::Binary, &[b'L'; COALESCE_MAX + 1]);
        let mut c = conn();
        c.send_shared(&small).unwrap();
        c.send_shared(&large).unwrap();
        let queued = c.take_transmit();
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[0], small);
        assert_ne!(
            queued[0].as_ptr(),
            small.as_ptr(),
            "the small frame is copied"
        );
        assert_eq!(
            queued[1].as_ptr(),
            large.as_ptr(),
            "the large frame is shared"
        );
    }

    fn message_strategy() -> impl Strategy<Value = (bool, Vec<u8>, Vec<usize>)> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(0usize..300, 0..4),
        )
    }

    proptest! {
        /// Any sequence of messages, fragmented anywhere and delivered in arbitrary chunks,
        /// decodes to the same messages.
        #[test]
        fn encode_decode_round_trip(messages in proptest::collection::vec(message_strategy(), 1..6),
                                    cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (is_text, bytes, splits) in messages {
                let payload = if is_text { String::from_utf8_lossy(&bytes).into_owned().into_bytes() } else { bytes };
                let mut splits: Vec<usize> = splits.into_iter().map(|s| s.min(payload.len())).collect();
                splits.sort_unstable();
                splits.push(payload.len());
                let mut start = 0;
                for (i, &end) in splits.iter().enumerate() {
                    let opcode = match (i, is_text) { (0, true) => OpCode::Text, (0, false) => OpCode::Binary, _ => OpCode::Continuation };
                    wire.extend(client_frame(opcode, i + 1 == splits.len(), false, &payload[start..end]));
                    start = end;
                }
                let payload = Bytes::from(payload);
                expected.push(Event::Message(if is_text { Message::Text(payload) } else { Message::Binary(payload) }));
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            points.sort_unstable();
            points.push(wire.len());
            let mut c = Connection::new(Limits::default(), None);
            let mut buf = BytesMut::new();
            let mut events = Vec::new();
            let mut start = 0;
            for end in points {
                buf.extend_from_slice(&wire[start..end]);
                start = end;
                while let Some(e) = c.read(&mut buf).unwrap() {
                    events.push(e);
                }
            }
            prop_assert_eq!(events, expected);
        }
    }
}
