//! SockJS frames (`o`, `h`, `a[…]`, `c[code,"reason"]`) and how each receiving transport wraps
//! them on the wire: newline-delimited (xhr), after a 2 KiB prelude (xhr_streaming), as
//! EventSource `data:` lines, as `<script>` calls (htmlfile) or one JSONP call (jsonp).

use bytes::{BufMut, Bytes, BytesMut};

/// The open frame.
pub const OPEN: &[u8] = b"o";
/// The heartbeat frame.
pub const HEARTBEAT: &[u8] = b"h";

/// The frame carrying `messages` (each UTF-8 text), quoted as SockJS quotes them.
pub fn messages(messages: &[Bytes]) -> Bytes {
    let len: usize = messages.iter().map(|m| m.len() + 3).sum();
    let mut out = BytesMut::with_capacity(len + 3);
    out.put_slice(b"a[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        quote_into(&mut out, &String::from_utf8_lossy(message));
    }
    out.put_u8(b']');
    out.freeze()
}

/// The close frame.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(format!("c[{code},").as_bytes());
    out.put_slice(serde_json::to_string(reason).unwrap_or_default().as_bytes());
    out.put_u8(b']');
    out.freeze()
}

/// `text` as a JSON string, with what SockJS clients need escaped besides: characters some
/// browsers mangle or treat as line ends (U+200C–U+200F, U+2028–U+202F, U+2060–U+206F,
/// U+FFF0–U+FFFF), and characters outside the BMP as surrogate pairs (JavaScript's view).
pub fn quote_into(out: &mut BytesMut, text: &str) {
    out.put_u8(b'"');
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        match c {
            '"' => out.put_slice(b"\\\""),
            '\\' => out.put_slice(b"\\\\"),
            '\n' => out.put_slice(b"\\n"),
            '\r' => out.put_slice(b"\\r"),
            '\t' => out.put_slice(b"\\t"),
            '\u{8}' => out.put_slice(b"\\b"),
            '\u{c}' => out.put_slice(b"\\f"),
            c if needs_escape(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.put_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
            c => out.put_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
    out.put_u8(b'"');
}

fn needs_escape(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x1f | 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff
        | 0x1_0000..)
}

/// A receiving transport: how its answer starts and how it carries each frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// `xhr` (long-polling) and `xhr_streaming`: one frame per line.
    Lines,
    /// `eventsource`: one `data:` event per frame.
    EventSource,
    /// `htmlfile`: a page calling the callback once per frame.
    HtmlFile(String),
    /// `jsonp`: one call of the callback.
    Jsonp(String),
}

/// What `xhr_streaming` sends first: browsers show nothing of a response before its first
/// kilobytes, so 2 KiB of `h` and a newline get the stream going.
pub fn streaming_prelude() -> Bytes {
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    Bytes::from(prelude)
}

/// The page `htmlfile` starts with, padded past 1 KiB for the same reason.
pub fn htmlfile_prelude(callback: &str) -> Bytes {
    let mut page = format!(
        "<!doctype html>\n<html><head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n</head><body>\
         <h2>Don't panic!</h2>\n  <script>\n    document.domain = document.domain;\n    \
         var c = parent.{callback};\n    c.start();\n    function p(d) {{c.message(d);}};\n    \
         window.onload = function() {{c.stop();}};\n  </script>"
    );
    let template_len = page.len() - callback.len() + "{{ callback }}".len();
    let pad = (1024 + 13usize).saturating_sub(template_len);
    page.push_str(&" ".repeat(pad));
    page.push_str("\r\n\r\n");
    Bytes::from(page)
}

impl Wrap {
    /// `frame` as this transport sends it.
    pub fn frame(&self, frame: &[u8]) -> Bytes {
        let text = String::from_utf8_lossy(frame);
        match self {
            Wrap::Lines => {
                let mut out = BytesMut::with_capacity(frame.len() + 1);
                out.put_slice(frame);
                out.put_u8(b'\n');
                out.freeze()
            }
            Wrap::EventSource => {
                // A raw CR, LF or NUL would end or break the event; `%` escapes them.
                let mut out = BytesMut::with_capacity(frame.len() + 10);
                out.put_slice(b"data: ");
                for &b in frame {
                    match b {
                        b'%' => out.put_slice(b"%25"),
                        b'\r' => out.put_slice(b"%0D"),
                        b'\n' => out.put_slice(b"%0A"),
                        0 => out.put_slice(b"%00"),
                        b => out.put_u8(b),
                    }
                }
                out.put_slice(b"\r\n\r\n");
                out.freeze()
            }
            Wrap::HtmlFile(_) => Bytes::from(format!(
                "<script>\np({});\n</script>\r\n",
                serde_json::to_string(&text).unwrap_or_default()
            )),
            Wrap::Jsonp(callback) => Bytes::from(format!(
                "/**/{callback}({});\r\n",
                serde_json::to_string(&text).unwrap_or_default()
            )),
        }
    }
}

/// The messages of a `xhr_send` or WebSocket payload: a JSON array of strings (a WebSocket
/// may also send one JSON string). `Err` is the SockJS error text.
pub fn parse_sent(payload: &[u8], single_allowed: bool) -> Result<Vec<Bytes>, &'static str> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| "Broken JSON encoding.")?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::String(one) if single_allowed => {
            return Ok(vec![Bytes::from(one)]);
        }
        _ => return Err("Payload expected."),
    };
    Ok(items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Bytes::from(s),
            other => Bytes::from(other.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = BytesMut::new();
        quote_into(&mut out, text);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn quotes_as_sockjs_does() {
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quoted("\u{1}\u{2028}\u{fff0}"), r#""\u0001\u2028\ufff0""#);
        assert_eq!(quoted("😀"), r#""\ud83d\ude00""#);
        assert_eq!(quoted("héllo /"), "\"héllo /\"");
    }

    #[test]
    fn frames() {
        let frame = messages(&[Bytes::from("x"), Bytes::from("y\"")]);
        assert_eq!(&frame[..], br#"a["x","y\""]"#);
        assert_eq!(&close(3000, "Go away!")[..], br#"c[3000,"Go away!"]"#);
        assert_eq!(
            &Wrap::Jsonp("cb".into()).frame(b"o")[..],
            b"/**/cb(\"o\");\r\n"
        );
        assert_eq!(
            &Wrap::EventSource.frame(b"a[\"%\"]")[..],
            b"data: a[\"%25\"]\r\n\r\n"
        );
        assert!(htmlfile_prelude("cb").len() > 1024);
    }

    #[test]
    fn parses_what_clients_send() {
        assert_eq!(parse_sent(br#"["a","b"]"#, false).unwrap().len(), 2);
        assert_eq!(parse_sent(br#""a""#, true).unwrap(), vec![Bytes::from("a")]);
        assert_eq!(parse_sent(br#""a""#, false), Err("Payload expected."));
        assert_eq!(parse_sent(b"[", false), Err("Broken JSON encoding."));
    }
}
