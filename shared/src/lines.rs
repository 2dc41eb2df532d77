//! Splits a byte stream into lines without ever holding more than one line (bounded by
//! `max_line_bytes`) plus the current chunk. Handles a UTF-8 BOM at the start, CRLF line
//! ends, a last line without a newline, and lines longer than the limit, which are reported
//! with their head only so memory stays bounded whatever the input.

/// One line handed to the consumer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the size limit, without its line end.
    Text {
        /// 1-based line number in the file.
        number: u64,
        /// The line's bytes.
        bytes: &'a [u8],
        /// The same bytes as text, when the splitter has validated them as UTF-8 (lines
        /// wholly inside a chunk are validated as one block; others are left to the
        /// consumer).
        text: Option<&'a str>,
    },
    /// A line longer than the limit.
    TooLong {
        /// 1-based line number in the file.
        number: u64,
        /// Its full length in bytes.
        len: u64,
        /// Its first bytes (up to the head size).
        head: &'a [u8],
    },
}

/// Incremental line splitter: feed chunks with [`LineSplitter::push`], then call
/// [`LineSplitter::finish`].
#[derive(Debug)]
pub struct LineSplitter {
    carry: Vec<u8>,
    carry_len: u64,
    number: u64,
    max: usize,
    head: usize,
    at_start: bool,
    /// The last byte appended to the carry (kept even when the carry is truncated), so a
    /// CR before the newline is dropped wherever the chunk boundary fell.
    last: u8,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl LineSplitter {
    /// A splitter refusing lines longer than `max_line_bytes`, keeping `head_bytes` of them.
    pub fn new(max_line_bytes: usize, head_bytes: usize) -> Self {
        LineSplitter {
            carry: Vec::new(),
            carry_len: 0,
            number: 0,
            max: max_line_bytes,
            head: head_bytes.min(max_line_bytes),
            at_start: true,
            last: 0,
        }
    }

    /// Feeds one chunk; `f` is called for every line completed by it.
    pub fn push<E>(
        &mut self,
        mut chunk: &[u8],
        f: &mut impl FnMut(Line<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.at_start {
            // A BOM may itself be split across chunks: wait for three bytes.
            if self.carry.len() + chunk.len() < BOM.len() && !chunk.is_empty() {
                self.carry.extend_from_slice(chunk);
                self.carry_len += chunk.len() as u64;
                return Ok(());
            }
            if !self.carry.is_empty() {
                let mut joined = std::mem::take(&mut self.carry);
                joined.extend_from_slice(chunk);
                self.carry_len = 0;
                self.at_start = false;
                let start = if joined.starts_with(BOM) { 3 } else { 0 };
                return self.push(&joined[start..], f);
            }
            if chunk.starts_with(BOM) {
                chunk = &chunk[3..];
            }
            self.at_start = false;
        }
        // The lines after the chunk's first line end, up to its last one, are validated
        // as UTF-8 in one pass (one call, not one a line); `text` is the valid part of
        // them, starting at chunk offset `from`.
        let from = memchr::memchr(b'\n', chunk).map_or(chunk.len(), |p| p + 1);
        let tail = &chunk[from..];
        let text = match std::str::from_utf8(tail) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&tail[..e.valid_up_to()]).unwrap_or_default(),
        };
        let mut at = 0;
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = (&chunk[..pos], &chunk[pos + 1..]);
            chunk = rest;
            let start = at;
            at += pos + 1;
            self.number += 1;
            if self.carry_len == 0 {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let valid = start
                    .checked_sub(from)
                    .and_then(|a| text.get(a..a + line.len()));
                self.emit(line, line.len() as u64, valid, f)?;
            } else {
                self.append(line);
                let (mut carried, len) = self.take_carry();
                let r = self.emit(&carried, len, None, f);
                carried.clear();
                self.carry = carried;
                r?;
            }
        }
        self.append(chunk);
        Ok(())
    }

    /// Ends the stream: a last line without a newline is emitted.
    pub fn finish<E>(&mut self, f: &mut impl FnMut(Line<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.at_start && !self.carry.is_empty() {
            // Fewer than three bytes in the whole file.
            self.at_start = false;
            let carried = std::mem::take(&mut self.carry);
            self.carry_len = 0;
            self.push(&carried, f)?;
        }
        if self.carry_len > 0 {
            self.number += 1;
            let (carried, len) = self.take_carry();
            self.emit(&carried, len, None, f)?;
        }
        Ok(())
    }

    /// Takes the carried line without a trailing CR: `(bytes kept, full length)`.
    fn take_carry(&mut self) -> (Vec<u8>, u64) {
        let mut carried = std::mem::take(&mut self.carry);
        let mut len = std::mem::take(&mut self.carry_len);
        if self.last == b'\r' {
            if carried.len() as u64 == len {
                carried.pop();
            }
            len -= 1;
        }
        self.last = 0;
        (carried, len)
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Some(&b) = bytes.last() {
            self.last = b;
        }
        self.carry_len += bytes.len() as u64;
        // Beyond the limit (plus one byte for a CR) only the head is kept.
        let over = self.carry_len as usize > self.max.saturating_add(1);
        let room = if over {
            self.head.saturating_sub(self.carry.len())
        } else {
            bytes.len()
        };
        self.carry
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        if over && self.carry.len() > self.head {
            self.carry.truncate(self.head);
        }
    }

    fn emit<E>(
        &self,
        line: &[u8],
        len: u64,
        text: Option<&str>,
        f: &mut impl FnMut(Line<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if len as usize > self.max {
            f(Line::TooLong {
                number: self.number,
                len,
                head: &line[..line.len().min(self.head)],
            })
        } else {
            f(Line::Text {
                number: self.number,
                bytes: line,
                text,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` fed in chunks of `size`, rendering each line as a string.
    fn split(input: &[u8], size: usize, max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max, 4);
        let mut out = Vec::new();
        let mut f = |l: Line<'_>| -> Result<(), ()> {
            out.push(match l {
                Line::Text {
                    number,
                    bytes,
                    text,
                } => {
                    // Text given is the line itself.
                    assert!(text.is_none_or(|t| t.as_bytes() == bytes), "{text:?}");
                    format!("{number}:{}", String::from_utf8_lossy(bytes))
                }
                Line::TooLong { number, len, head } => {
                    format!("{number}:too long {len} {}", String::from_utf8_lossy(head))
                }
            });
            Ok(())
        };
        for c in input.chunks(size.max(1)) {
            s.push(c, &mut f).unwrap();
        }
        s.finish(&mut f).unwrap();
        out
    }

    #[test]
    fn same_lines_whatever_the_chunking() {
        let input = b"\xEF\xBB\xBFab\r\n\ncd\nlast";
        let want = ["1:ab", "2:", "3:cd", "4:last"];
        for size in 1..=input.len() {
            assert_eq!(split(input, size, 100), want, "chunk size {size}");
        }
    }

    #[test]
    fn long_lines_keep_only_their_head() {
        let input = b"ok\n0123456789\r\nfine\n0123456789\n01234567\r\n012345678\r\n";
        let want = [
            "1:ok",
            "2:too long 10 0123",
            "3:fine",
            "4:too long 10 0123",
            "5:01234567",
            "6:too long 9 0123",
        ];
        for size in 1..=input.len() {
            assert_eq!(split(input, size, 8), want, "chunk size {size}");
        }
    }

    #[test]
    fn lines_inside_a_chunk_come_validated_as_text() {
        let mut s = LineSplitter::new(100, 4);
        let mut got = Vec::new();
        let mut f = |l: Line<'_>| -> Result<(), ()> {
            if let Line::Text { number, text, .. } = l {
                got.push((number, text.map(str::to_string)));
            }
            Ok(())
        };
        // Line 1 starts the chunk (left to the consumer), 2 and 3 are whole inside it, 4
        // holds a byte that is not UTF-8, 5 is valid again but after it, 6 ends the chunk
        // unfinished and is completed by the next one (carried).
        s.push(b"a\r\nb\xC3\xA9\r\nc\nd\xFF\ne\nf", &mut f).unwrap();
        s.push(b"g\nh\ni", &mut f).unwrap();
        s.finish(&mut f).unwrap();
        let some = |t: &str| Some(t.to_string());
        assert_eq!(
            got,
            [
                (1, None),
                (2, some("b\u{e9}")),
                (3, some("c")),
                (4, None),
                (5, None),
                (6, None),
                (7, some("h")),
                (8, None),
            ]
        );
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(split(b"", 4, 10).is_empty());
        assert_eq!(split(b"\xEF\xBB\xBF", 1, 10), Vec::<String>::new());
        assert_eq!(split(b"a", 1, 10), ["1:a"]);
        assert_eq!(split(b"\n\n", 1, 10), ["1:", "2:"]);
    }
}
