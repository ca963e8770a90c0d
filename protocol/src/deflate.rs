//! permessage-deflate (RFC 7692): negotiated parameters, compressor and size-limited inflater.

use std::cell::RefCell;

use bytes::BufMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;

/// Every message's compressed data ends with an empty stored block, stripped on the wire (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Output is produced in steps of at most this many bytes, so a bomb never over-allocates.
const INFLATE_STEP: usize = 16 * 1024;

/// What the server is willing to do with permessage-deflate; `Default` accepts any offer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Largest LZ77 window (9-15) the server compresses with.
    pub server_max_window_bits: u8,
    /// Window (9-15) asked of clients that offer `client_max_window_bits`; smaller saves memory.
    pub client_max_window_bits: u8,
    /// Reset our compressor after every message (saves memory, costs ratio).
    pub server_no_context_takeover: bool,
    /// Ask clients to reset theirs, which lets us drop inflater state between messages.
    pub client_no_context_takeover: bool,
    /// zlib level 0-9.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 6,
        }
    }
}

/// The parameters both sides agreed on in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Window the server compresses with.
    pub server_max_window_bits: u8,
    /// Largest window the client may compress with.
    pub client_max_window_bits: u8,
    /// zlib level for outgoing messages.
    pub level: u32,
}

/// Compresses outgoing messages.
pub struct Deflater {
    compress: Compress,
    reset_each_message: bool,
}

impl Deflater {
    /// A compressor for the server side of `params`.
    pub fn new(params: &DeflateParams) -> Self {
        Self {
            // Clamped: zlib panics outside 9-15 bits / level 0-9, and the fields are public.
            compress: Compress::new_with_window_bits(
                Compression::new(params.level.min(9)),
                false,
                params.server_max_window_bits.clamp(9, 15),
            ),
            reset_each_message: params.server_no_context_takeover,
        }
    }

    /// Compresses one whole message, without the trailing `00 00 ff ff`.
    pub fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start_in = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            // Compression into a Vec cannot fail: the stream is ours and never finished.
            let status =
                self.compress
                    .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync);
            let done = (self.compress.total_in() - start_in) as usize == input.len();
            // A sync flush is complete once it returns with output space to spare.
            if matches!(status, Ok(Status::Ok | Status::BufError))
                && done
                && out.len() < out.capacity()
            {
                break;
            }
            if status.is_err() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else if out.is_empty() {
            // zlib flushes nothing when there is nothing new (e.g. an empty message right after
            // another). The receiver appends LEN/NLEN of an empty stored block, so send the
            // block's header byte it belongs to (RFC 7692 §7.2.3.6: an empty message is 0x00).
            out.push(0x00);
        }
        if self.reset_each_message {
            self.compress.reset();
        }
        out
    }
}

/// Compresses one whole message on its own, as a connection that negotiated
/// `server_no_context_takeover` sends it: nothing from earlier messages is referred to, so the
/// same input always gives the same bytes and one compression can go to every connection with
/// these parameters. The compressor is the calling thread's, kept between calls, so no
/// connection holds compression memory of its own.
pub fn compress_alone(input: &[u8], params: &DeflateParams) -> Vec<u8> {
    thread_local! {
        /// One compressor per (level, window) this thread has used: a few at most.
        static DEFLATERS: RefCell<Vec<((u32, u8), Deflater)>> = const { RefCell::new(Vec::new()) };
    }
    let alone = DeflateParams {
        server_no_context_takeover: true,
        ..*params
    };
    let key = (
        alone.level.min(9),
        alone.server_max_window_bits.clamp(9, 15),
    );
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let at = match deflaters.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                deflaters.push((key, Deflater::new(&alone)));
                deflaters.len() - 1
            }
        };
        deflaters[at].1.compress(input)
    })
}

/// Inflates one whole message that was compressed alone (the peer agreed to no context
/// takeover and the message came in one frame) with the calling thread's inflater, appending
/// to `out` and failing past `max` like [`Inflater::inflate`]. No connection keeps an inflater
/// (about 40 KiB with its window) or allocates one per message for this.
pub fn inflate_alone(
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
    params: &DeflateParams,
) -> Result<(), ProtocolError> {
    thread_local! {
        /// One inflater per window size this thread has used, reset after every message.
        static INFLATERS: RefCell<Vec<Inflater>> = const { RefCell::new(Vec::new()) };
    }
    let bits = params.client_max_window_bits.clamp(9, 15);
    INFLATERS.with(|cell| {
        let mut inflaters = cell.borrow_mut();
        let at = match inflaters.iter().position(|i| i.window_bits == bits) {
            Some(at) => at,
            None => {
                inflaters.push(Inflater {
                    decompress: None,
                    window_bits: bits,
                    reset_each_message: false,
                });
                inflaters.len() - 1
            }
        };
        let inflater = &mut inflaters[at];
        let result = inflater
            .inflate(input, out, max)
            .and_then(|()| inflater.inflate(&TAIL, out, max));
        // Whatever happened, the next message starts from nothing.
        if let Some(d) = inflater.decompress.as_mut() {
            d.reset(false);
        }
        result
    })
}

/// Appends `data` as uncompressed (stored), non-final deflate blocks that end on a byte
/// boundary, so a message compressed alone can follow them in the same payload: a part that
/// differs per connection goes first, uncompressed, before bytes compressed once for all.
pub fn put_stored(out: &mut impl BufMut, data: &[u8]) {
    for chunk in data.chunks(usize::from(u16::MAX)) {
        let len = chunk.len() as u16;
        // BFINAL 0, BTYPE 00, then padding to the byte boundary: one zero byte.
        out.put_u8(0);
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(chunk);
    }
}

/// Bytes [`put_stored`] writes for `len` bytes of data.
pub fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(usize::from(u16::MAX))
}

/// Inflates incoming messages frame by frame, never producing more than a limit.
pub struct Inflater {
    decompress: Option<Decompress>,
    window_bits: u8,
    reset_each_message: bool,
}

impl Inflater {
    /// An inflater for the client side of `params`; its state is allocated on first use.
    pub fn new(params: &DeflateParams) -> Self {
        Self {
            decompress: None,
            // zlib cannot inflate raw streams with an 8-bit window; 9 decodes those too.
            window_bits: params.client_max_window_bits.clamp(9, 15),
            reset_each_message: params.client_no_context_takeover,
        }
    }

    /// Inflates the next piece of a compressed message, appending to `out`.
    ///
    /// Fails with [`ProtocolError::MessageTooBig`] as soon as `out` would grow past `max`.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let bits = self.window_bits;
        let d = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let mut consumed = 0;
        loop {
            // Capacity never passes max + 1: producing that extra byte proves the limit is
            // crossed, and a bomb cannot make us allocate more. Doubling keeps growth amortised.
            if out.len() > max {
                return Err(ProtocolError::MessageTooBig {
                    size: out.len() as u64,
                    max,
                });
            }
            if out.capacity() == out.len() {
                // A small message gets a small buffer (chat messages are a few hundred bytes);
                // doubling from there keeps growth amortised.
                let first = (input.len() * 4).clamp(256, INFLATE_STEP);
                let target = (out.capacity() * 2).max(first).min(max + 1);
                out.reserve_exact(target - out.len());
            }
            let before_in = d.total_in();
            let before_out = out.len();
            let spare = out.capacity() - out.len();
            let status = d
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            consumed += (d.total_in() - before_in) as usize;
            if out.len() > max {
                return Err(ProtocolError::MessageTooBig {
                    size: out.len() as u64,
                    max,
                });
            }
            let filled = out.len() - before_out == spare;
            if status == Status::StreamEnd {
                // A final block ends the stream; a later message starts a fresh one.
                d.reset(false);
                if consumed == input.len() {
                    return Ok(());
                }
                continue;
            }
            if consumed == input.len() && !filled {
                return Ok(());
            }
            if d.total_in() == before_in && out.len() == before_out {
                // No progress with room to write: either all was already out, or zlib is stuck.
                return if consumed == input.len() {
                    Ok(())
                } else {
                    Err(ProtocolError::InvalidCompressedData)
                };
            }
        }
    }

    /// Holds no state: no message is being inflated and none taken over.
    pub fn is_idle(&self) -> bool {
        self.decompress.is_none()
    }

    /// Ends a message: feeds the stripped tail and resets if the client does not take over
    /// context.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), ProtocolError> {
        self.inflate(&TAIL, out, max)?;
        if self.reset_each_message {
            // Dropping the state frees the window; it is rebuilt on the next message.
            self.decompress = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(snct: bool, cnct: bool, bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: bits,
            client_max_window_bits: 15,
            level: 6,
        }
    }

    fn round_trip(p: &DeflateParams, messages: &[&[u8]]) {
        let mut d = Deflater::new(p);
        // The peer inflates what we deflate: mirror the takeover flags.
        let mut i = Inflater::new(&DeflateParams {
            client_no_context_takeover: p.server_no_context_takeover,
            ..*p
        });
        for m in messages {
            let compressed = d.compress(m);
            let mut out = Vec::new();
            i.inflate(&compressed, &mut out, 1 << 20).unwrap();
            i.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(&out[..], *m);
        }
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        let msgs: [&[u8]; 5] = [
            b"hello hello hello",
            b"",
            b"",
            b"hello again hello again",
            b"",
        ];
        for snct in [false, true] {
            for bits in [9, 12, 15] {
                round_trip(&params(snct, snct, bits), &msgs);
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let mut i = Inflater::new(&params(false, false, 15));
        let mut out = Vec::new();
        i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        i.finish_message(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn context_takeover_shrinks_repeats() {
        let mut d = Deflater::new(&params(false, false, 15));
        let msg = b"the quick brown fox jumps over the lazy dog, twice over";
        let first = d.compress(msg).len();
        let second = d.compress(msg).len();
        assert!(second < first, "{second} !< {first}");
    }

    #[test]
    fn bomb_stops_at_the_limit_without_allocating_past_it() {
        let mut d = Deflater::new(&params(false, false, 15));
        let bomb = d.compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        let mut i = Inflater::new(&params(false, false, 15));
        let mut out = Vec::new();
        let err = i.inflate(&bomb, &mut out, 64 * 1024).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::MessageTooBig { max: 65536, .. }
        ));
        assert!(
            out.capacity() <= 64 * 1024 + 1,
            "capacity {}",
            out.capacity()
        );
    }

    #[test]
    fn out_of_range_params_are_clamped_not_panics() {
        let wild = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 8,
            client_max_window_bits: 16,
            level: 10,
        };
        let mut d = Deflater::new(&wild);
        let mut i = Inflater::new(&wild);
        let mut out = Vec::new();
        i.inflate(&d.compress(b"ok"), &mut out, 100).unwrap();
        i.finish_message(&mut out, 100).unwrap();
        assert_eq!(out, b"ok");
    }

    #[test]
    fn compressed_alone_is_the_same_every_time_and_can_follow_stored_blocks() {
        let p = params(true, true, 15);
        let body = b"{\"type\":\"message\",\"room\":\"general\",\"body\":\"hello hello hello\"}";
        let once = compress_alone(body, &p);
        assert_eq!(compress_alone(body, &p), once, "same input, same bytes");
        assert!(once.len() < body.len());
        for prefix in [
            &b""[..],
            b"MESSAGE\nsubscription:sub-0\n",
            &[7u8; 70_000][..],
        ] {
            let mut payload = Vec::new();
            put_stored(&mut payload, prefix);
            assert_eq!(payload.len(), stored_len(prefix.len()));
            payload.extend_from_slice(&once);
            let mut i = Inflater::new(&p);
            let mut out = Vec::new();
            i.inflate(&payload, &mut out, 1 << 20).unwrap();
            i.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(out, [prefix, &body[..]].concat());
        }
    }

    #[test]
    fn messages_inflated_alone_share_the_threads_inflater_and_errors_leave_it_clean() {
        let p = params(true, true, 15);
        let mut d = Deflater::new(&p);
        for round in 0..3 {
            let msg = format!("message {round} message {round} message {round}");
            let mut out = Vec::new();
            inflate_alone(&d.compress(msg.as_bytes()), &mut out, 1 << 20, &p).unwrap();
            assert_eq!(out, msg.as_bytes());
            let mut junk = Vec::new();
            assert!(inflate_alone(&[0xff, 0xff, 0xff], &mut junk, 100, &p).is_err());
        }
        let bomb = d.compress(&vec![0u8; 1 << 20]);
        let mut out = Vec::new();
        assert!(matches!(
            inflate_alone(&bomb, &mut out, 1000, &p),
            Err(ProtocolError::MessageTooBig { .. })
        ));
        let mut out = Vec::new();
        inflate_alone(&d.compress(b"after"), &mut out, 100, &p).unwrap();
        assert_eq!(out, b"after");
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut i = Inflater::new(&params(false, false, 15));
        let mut out = Vec::new();
        let err = i
            .inflate(&[0xff, 0xff, 0xff, 0xff], &mut out, 1000)
            .unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCompressedData);
    }
}
