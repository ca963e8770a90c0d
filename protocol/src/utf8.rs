//! Incremental UTF-8 validation across frame and read boundaries.

/// Validates a text message piece by piece and fails on the first byte that can never be part
/// of valid UTF-8, without waiting for the end of the message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a character cut off at the end of the previous piece.
    partial: [u8; 4],
    /// How much of `partial` holds it (0–3; a byte, so a connection carries 5 bytes for this).
    partial_len: u8,
}

/// The input is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Checks the next piece of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let held = usize::from(self.partial_len);
            let width = char_width(self.partial[0]);
            let take = (width - held).min(input.len());
            self.partial[held..held + take].copy_from_slice(&input[..take]);
            let held = held + take;
            self.partial_len = held as u8; // at most 4
            input = &input[take..];
            match std::str::from_utf8(&self.partial[..held]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix: the piece ended inside the same character.
                Err(_) => return Ok(()),
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // A valid prefix of a character at the very end: keep it for the next piece.
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8; // under 4
                Ok(())
            }
        }
    }

    /// Ends the message: a character cut off at the end is invalid. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// Bytes in the character that `lead` starts; the validator only keeps valid lead bytes.
fn char_width(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_split(input: &[u8], splits: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &s in splits {
            let s = s.clamp(start, input.len());
            v.feed(&input[start..s])?;
            start = s;
        }
        v.feed(&input[start..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_on_an_impossible_byte() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"hello \xf4\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn fails_fast_when_a_split_character_goes_wrong() {
        let mut v = Utf8Validator::default();
        v.feed(b"ok \xce").unwrap();
        assert_eq!(v.feed(b"\x41"), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_character_fails_at_finish() {
        let mut v = Utf8Validator::default();
        v.feed(b"ok \xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "κόσμε 🎉 ok".as_bytes();
        let splits: Vec<usize> = (0..text.len()).collect();
        assert_eq!(feed_split(text, &splits), Ok(()));
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                           splits in proptest::collection::vec(0usize..64, 0..6)) {
            let mut splits = splits;
            splits.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(feed_split(&bytes, &splits).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_any_split(s in "\\PC{0,40}", splits in proptest::collection::vec(0usize..160, 0..6)) {
            let mut splits = splits;
            splits.sort_unstable();
            prop_assert_eq!(feed_split(s.as_bytes(), &splits), Ok(()));
        }
    }
}
