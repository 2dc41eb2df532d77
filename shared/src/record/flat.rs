//! The landing reader's fast path: one pass over a line that is a flat object of plain
//! values, straight into the cells.
//!
//! It takes a line only when its answer is certain to be the full reader's: field names
//! without escapes, strings without escapes or control characters, integers of at most 18
//! digits, decimals of at most 15 significant digits without an exponent (their `f64` is
//! one correctly rounded division: the exact integer over an exact power of ten), `null`,
//! and whitespace. Anything else (escapes, exponents, numbers in strings, a fraction where
//! an integer belongs, `true`, nested values, a `-0`, malformed JSON) returns `None`, and
//! the line goes to sonic-rs and serde_json, which decide it and word its error. The unit
//! tests of [`super`] run every line through both and compare.

use std::borrow::Cow;

use super::{Cell, I32, field_index};
use crate::schema::{ColType, Column};

/// The field layout of the last line a [`Shape`] learned: lines of one file usually name
/// the same fields in the same order and spacing, so the next line is first read against
/// it, each field's name and punctuation checked as one comparison of bytes.
#[derive(Debug, Default)]
pub(super) struct Shape {
    /// The columns the layout is for (their address and count).
    columns: (usize, usize),
    /// The bytes before each field's value (`{"user":`, `,"timestamp":`, …), one after another.
    text: Vec<u8>,
    /// Each field: where its bytes end in `text`, and the column it fills (`None`: a field
    /// no column takes, skipped).
    fields: Vec<(usize, Option<usize>)>,
}

/// Fills `out` (all `Null` on entry, one cell per column) from `line`, or `None` when the
/// line needs the full reader (`out` is then partly filled). Reads the line against
/// `shape` first; where the line's fields part from it (a field absent, added, renamed,
/// spaced otherwise), the rest of the line is read field by field and the layout learned
/// from there.
pub(super) fn parse<'a>(
    line: &'a str,
    columns: &[Column],
    out: &mut [Cell<'a>],
    shape: &mut Shape,
) -> Option<()> {
    let mut resume = None;
    if shape.columns == (columns.as_ptr() as usize, columns.len()) && !shape.fields.is_empty() {
        match known(line, columns, out, shape) {
            Known::Read => return Some(()),
            Known::Parted { field, at, next } if field > 0 => {
                shape.text.truncate(shape.fields[field - 1].0);
                shape.fields.truncate(field);
                resume = Some((at, next));
            }
            _ => out.iter_mut().for_each(|c| *c = Cell::Null),
        }
    }
    if resume.is_none() {
        shape.columns = (columns.as_ptr() as usize, columns.len());
        shape.text.clear();
        shape.fields.clear();
    }
    let read = learn(line, columns, out, shape, resume);
    if read.is_none() {
        shape.fields.clear();
    }
    read
}

/// How far a line follows a layout.
#[derive(Debug, PartialEq)]
enum Known {
    /// Wholly: its cells are read.
    Read,
    /// Up to field `field` (its cells before it read), which the layout does not have where
    /// the line's previous value ends, at `at`; `next` is the column after the last filled.
    Parted {
        field: usize,
        at: usize,
        next: usize,
    },
    /// A value the fast path does not take.
    Refused,
}

/// Reads `line` against `shape`'s fields, byte for byte up to each value.
fn known<'a>(line: &'a str, columns: &[Column], out: &mut [Cell<'a>], shape: &Shape) -> Known {
    let b = line.as_bytes();
    let (mut i, mut from, mut next) = (0, 0, 0);
    for (field, &(to, column)) in shape.fields.iter().enumerate() {
        let before = &shape.text[from..to];
        from = to;
        if !holds(b, i, before) {
            return Known::Parted { field, at: i, next };
        }
        i += before.len();
        let after = match column {
            Some(c) => {
                next = c + 1;
                value(line, i, columns[c].ty, &mut out[c])
            }
            None => skip(b, i),
        };
        match after {
            Some(after) => i = after,
            None => return Known::Refused,
        }
    }
    let end = ws(b, i);
    if b.get(end) == Some(&b'}') && ws(b, end + 1) == b.len() {
        Known::Read
    } else {
        Known::Parted {
            field: shape.fields.len(),
            at: i,
            next,
        }
    }
}

/// Whether `b` holds `text` at `i`.
fn holds(b: &[u8], i: usize, text: &[u8]) -> bool {
    b.get(i..i + text.len()).is_some_and(|got| same(got, text))
}

/// Whether two byte strings are equal, compared a word at a time, the last word
/// overlapping the ones before: the layout's prefixes and the e-mails and serials compared
/// once a line are a few bytes to a few dozen, too short to be worth a call to `memcmp`
/// (longer ones get it).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 64 {
        return a == b;
    }
    if n >= 8 {
        let word = |s: &[u8], at: usize| s.get(at..).and_then(|r| r.first_chunk::<8>().copied());
        let mut at = 0;
        while at + 8 < n {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        return word(a, n - 8) == word(b, n - 8);
    }
    if n >= 4 {
        let half = |s: &[u8], at: usize| s.get(at..).and_then(|r| r.first_chunk::<4>().copied());
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Reads `line` field by field, recording its layout in `shape`: from the start (`shape`
/// empty), or from `resume` (where the previous value ends, and the column after the last
/// filled) with `shape` holding the fields before.
fn learn<'a>(
    line: &'a str,
    columns: &[Column],
    out: &mut [Cell<'a>],
    shape: &mut Shape,
    resume: Option<(usize, usize)>,
) -> Option<()> {
    let b = line.as_bytes();
    // Fields usually come in column order: the column after the last one matched is tried
    // first.
    let (mut i, mut next, mut from);
    match resume {
        None => {
            i = ws(b, 0);
            if b.get(i) != Some(&b'{') {
                return None;
            }
            i = ws(b, i + 1);
            if b.get(i) == Some(&b'}') {
                return (ws(b, i + 1) == b.len()).then_some(());
            }
            (next, from) = (0, 0);
        }
        Some((at, hint)) => {
            (next, from) = (hint, at);
            i = ws(b, at);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return (ws(b, i + 1) == b.len()).then_some(()),
                _ => return None,
            }
        }
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end(b, i + 1)?;
        let key = &b[i + 1..end];
        i = ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let column = field_index(columns, key, next);
        shape.text.extend_from_slice(&b[from..i]);
        shape.fields.push((shape.text.len(), column));
        i = match column {
            Some(c) => {
                next = c + 1;
                value(line, i, columns[c].ty, &mut out[c])?
            }
            None => skip(b, i)?,
        };
        from = i;
        i = ws(b, i);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return (ws(b, i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// The first position at or after `i` that is not JSON whitespace.
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = b.get(i) {
        i += 1;
    }
    i
}

/// The position of the quote closing a string whose text starts at `i`, if the text has
/// no escape and no control character. Eight bytes at a time: a byte that is a quote, a
/// backslash or below 0x20 sets its high bit in `stops` (the lowest such byte exactly;
/// bits above it may be spurious, and are not looked at).
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w;
    while let Some(&chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(chunk);
        let stops = (below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20))
            & HIGH;
        if stops != 0 {
            let n = i + (stops.trailing_zeros() / 8) as usize;
            return (b[n] == b'"').then_some(n);
        }
        i += 8;
    }
    let rest = b.get(i..)?;
    let n = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (rest[n] == b'"').then_some(i + n)
}

/// A number without an exponent: its sign, its digits as one integer, how many of them
/// follow the point, and where it ends.
struct Number {
    negative: bool,
    digits: u64,
    fraction: u32,
    end: usize,
}

/// The number starting at `i`, if it is valid JSON of at most 18 digits, not `-0`, and has
/// no exponent.
fn number(b: &[u8], mut i: usize) -> Option<Number> {
    let negative = b.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let start = i;
    let mut digits = 0u64;
    while let Some(&d @ b'0'..=b'9') = b.get(i) {
        digits = digits * 10 + u64::from(d - b'0');
        i += 1;
        if i - start > 18 {
            return None;
        }
    }
    let int_digits = i - start;
    // JSON: at least one digit, and no leading zero before another digit.
    if int_digits == 0 || (int_digits > 1 && b[start] == b'0') {
        return None;
    }
    let mut fraction = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let point = i;
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            digits = digits * 10 + u64::from(d - b'0');
            i += 1;
            if int_digits + (i - point) > 18 {
                return None;
            }
        }
        fraction = (i - point) as u32;
        if fraction == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) || (negative && digits == 0) {
        return None;
    }
    Some(Number {
        negative,
        digits,
        fraction,
        end: i,
    })
}

/// The integer starting at `i` (valid JSON, at most 18 digits, not `-0`, no fraction or
/// exponent), and where it ends: what [`number`] gives for it, read eight digits at a time
/// (the timestamps of the landing files have 13). Always inlined into the value reader: as a
/// call (the compiler's choice) it cost the accelerometer stage 1.6% of its instructions and
/// the Step Trainer stage 3.1%.
#[inline(always)]
fn integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let negative = b.get(i) == Some(&b'-');
    let start = i + usize::from(negative);
    let (digits, end) = match b.get(start..).and_then(|r| r.first_chunk::<16>()) {
        Some(chunk) => {
            let (hi, lo) = chunk.split_at(8);
            let (hi, lo) = (
                u64::from_le_bytes(hi.try_into().ok()?),
                u64::from_le_bytes(lo.try_into().ok()?),
            );
            match leading_digits(hi) {
                8 => match leading_digits(lo) {
                    // More than 16 digits: the digit loop decides.
                    8 => return whole(number(b, i)?),
                    n => (
                        eight_digits(hi, 8) * POW10_U64[n] + eight_digits(lo, n),
                        start + 8 + n,
                    ),
                },
                n => (eight_digits(hi, n), start + n),
            }
        }
        None => return whole(number(b, i)?),
    };
    let count = end - start;
    // JSON: at least one digit, no leading zero before another digit, no `-0`; a fraction
    // or an exponent is the full reader's to decide.
    if count == 0
        || (count > 1 && b[start] == b'0')
        || (negative && digits == 0)
        || matches!(b.get(end), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    // At most 16 digits: within i64.
    let v = digits as i64;
    Some((if negative { -v } else { v }, end))
}

/// An integer of [`number`], if it has no fraction: its value (at most 18 digits fit an
/// `i64`) and end.
fn whole(n: Number) -> Option<(i64, usize)> {
    if n.fraction > 0 {
        return None;
    }
    let v = n.digits as i64;
    Some((if n.negative { -v } else { v }, n.end))
}

/// How many of the eight bytes of `w` (first byte lowest) are ASCII digits before the
/// first that is not. A byte `d` is a digit when `d - '0'` is below 10: adding 0x76 sets
/// the high bit of any byte from 10 up, and a byte whose subtraction wrapped has it set
/// already; carries only run towards later bytes, so the first flagged byte is exact.
fn leading_digits(w: u64) -> usize {
    const ZEROS: u64 = u64::from_le_bytes([b'0'; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let d = w.wrapping_sub(ZEROS);
    let flagged = (d.wrapping_add(u64::from_le_bytes([0x76; 8])) | d) & HIGH;
    (flagged.trailing_zeros() / 8) as usize
}

/// The value of the first `n` (1 to 8) bytes of `w`, all ASCII digits, the first byte
/// the most significant: the digits are moved to the top of the word (the bytes below
/// become leading zeros), then pairs, quads and the two halves are combined.
fn eight_digits(w: u64, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let d = w.wrapping_sub(u64::from_le_bytes([b'0'; 8])) << (8 * (8 - n));
    let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
    let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_ffff_0000_ffff;
    (d.wrapping_mul(10_000) + (d >> 32)) & 0xffff_ffff
}

/// Powers of ten up to 10^8.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Exact powers of ten as `f64` (10^22 is the largest).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Reads the value starting at `i` into `cell`, the cell of a column of type `ty`, and
/// gives where the value ends. Inlined into the two loops that call it, writing the cell in
/// place: as a function returning the cell and the end, each value paid a call and a copy of
/// both through memory (a third of the value's instructions for the phone's decimals).
#[inline(always)]
fn value<'a>(line: &'a str, i: usize, ty: ColType, cell: &mut Cell<'a>) -> Option<usize> {
    let b = line.as_bytes();
    let (read, end) = match (b.get(i)?, ty) {
        (b'"', ColType::Str) => {
            let end = string_end(b, i + 1)?;
            (Cell::Str(Cow::Borrowed(&line[i + 1..end])), end + 1)
        }
        (b'n', _) => {
            if !b[i..].starts_with(b"null") {
                return None;
            }
            (Cell::Null, i + 4)
        }
        (b'-' | b'0'..=b'9', ColType::Long | ColType::Int) => {
            let (v, end) = integer(b, i)?;
            if ty == ColType::Int && !I32.contains(&v) {
                return None;
            }
            (Cell::Long(v), end)
        }
        (b'-' | b'0'..=b'9', ColType::Double) => match one_decimal(b, i) {
            Some(read) => read,
            None => {
                let n = number(b, i)?;
                // Both operands exact: the quotient is the correctly rounded value.
                if n.digits >= 1 << 53 {
                    return None;
                }
                let v = n.digits as f64 / POW10[n.fraction as usize];
                (Cell::Double(if n.negative { -v } else { v }), n.end)
            }
        },
        _ => return None,
    };
    *cell = read;
    Some(end)
}

/// A decimal of one digit before the point and one after (`1.0`, `-0.5`: how the phone
/// writes its readings), not followed by another digit, a point or an exponent: its cell and
/// end, what [`number`] gives for it, without the digit loops. `None` for anything else
/// (`-0.0` too), which [`number`] then decides.
fn one_decimal(b: &[u8], i: usize) -> Option<(Cell<'static>, usize)> {
    let negative = b.get(i) == Some(&b'-');
    let s = i + usize::from(negative);
    let &[whole @ b'0'..=b'9', b'.', tenths @ b'0'..=b'9'] = b.get(s..)?.first_chunk::<3>()? else {
        return None;
    };
    if matches!(b.get(s + 3), Some(b'0'..=b'9' | b'.' | b'e' | b'E')) {
        return None;
    }
    let digits = u64::from(whole - b'0') * 10 + u64::from(tenths - b'0');
    if negative && digits == 0 {
        return None;
    }
    let v = digits as f64 / POW10[1];
    Some((Cell::Double(if negative { -v } else { v }), s + 3))
}

/// Where a value of a field no column takes ends, if it is a plain string, number or null.
fn skip(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i + 1).map(|end| end + 1),
        b'n' => b[i..].starts_with(b"null").then_some(i + 4),
        b'-' | b'0'..=b'9' => number(b, i).map(|n| n.end),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;

    #[test]
    fn a_line_of_the_learned_layout_is_read_against_it_and_another_layout_is_learned() {
        let cols = Table::AccelerometerLanding.columns();
        let mut shape = Shape::default();
        let read = |line: &'static str, shape: &mut Shape| {
            let mut out = vec![Cell::Null; cols.len()];
            parse(line, cols, &mut out, shape).map(|()| out)
        };
        let a = r#"{"timestamp":1,"user":"a","x":1.5,"y":2,"z":-3,"note":"n"}"#;
        assert!(read(a, &mut shape).is_some());
        assert_eq!(
            shape.text,
            br#"{"timestamp":,"user":,"x":,"y":,"z":,"note":"#
        );
        assert_eq!(
            shape.fields,
            [
                (13, Some(1)),
                (21, Some(0)),
                (26, Some(2)),
                (31, Some(3)),
                (36, Some(4)),
                (44, None)
            ]
        );
        // Same layout, other values: read against the layout.
        let a2 = r#"{"timestamp":22,"user":"bb","x":-0.25,"y":null,"z":7,"note":12}"#;
        let mut out = vec![Cell::Null; cols.len()];
        assert_eq!(known(a2, cols, &mut out, &shape), Known::Read);
        assert_eq!(
            out,
            [
                Cell::Str(Cow::Borrowed("bb")),
                Cell::Long(22),
                Cell::Double(-0.25),
                Cell::Null,
                Cell::Double(7.0)
            ]
        );
        // Another order, a missing field, an extra field, other spacing: not this layout,
        // and each is learned in turn (the same cells as a reader that never saw `a`).
        for other in [
            r#"{"user":"a","timestamp":1,"x":1.5,"y":2,"z":-3,"note":"n"}"#,
            r#"{"timestamp":1,"user":"a","x":1.5,"y":2,"z":-3}"#,
            r#"{"timestamp":1,"user":"a","x":1.5,"y":2,"z":-3,"note":"n","more":1}"#,
            r#"{"timestamp":1, "user":"a","x":1.5,"y":2,"z":-3,"note":"n"}"#,
            r#"{"timestamp":1,"USER":"a","x":1.5,"y":2,"z":-3,"note":"n"}"#,
            r#"{"timestamp":1,"user":"a","x":1.5,"y":2,"z":-3,"notes":"n"}"#,
        ] {
            let mut out = vec![Cell::Null; cols.len()];
            assert!(
                !matches!(known(other, cols, &mut out, &shape), Known::Read),
                "{other}"
            );
            let learned = read(other, &mut shape);
            assert!(learned.is_some(), "{other}");
            let mut fresh = Shape::default();
            assert_eq!(learned, read(other, &mut fresh), "{other}");
            // Learned from where the line parted from the layout, or from its start: the
            // same layout.
            assert_eq!(
                (&shape.text, &shape.fields),
                (&fresh.text, &fresh.fields),
                "{other}"
            );
            read(a, &mut shape);
        }
        // Where a line parts from the layout: the fields before are read against it, the
        // rest field by field (customer lines leave out the fields they have no value for).
        let against = |line: &'static str| {
            let mut out = vec![Cell::Null; cols.len()];
            known(line, cols, &mut out, &shape)
        };
        let short = r#"{"timestamp":1,"user":"a","x":1.5,"z":-3,"note":"n"}"#;
        let (field, at, next) = (3, 33, 3);
        assert_eq!(against(short), Known::Parted { field, at, next });
        let longer = r#"{"timestamp":1,"user":"a","x":1.5,"y":2,"z":-3,"note":"n","more":[1]}"#;
        let (field, at, next) = (6, 57, 5);
        assert_eq!(against(longer), Known::Parted { field, at, next });
        let escaped = r#"{"timestamp":1,"user":"a\"b","x":1.5,"y":2,"z":-3,"note":"n"}"#;
        assert_eq!(against(escaped), Known::Refused);
        // A line the fast path cannot take leaves no layout behind.
        assert!(read(r#"{"timestamp":1,"user":"a\"b"}"#, &mut shape).is_none());
        assert!(shape.fields.is_empty());
        // A layout is for the columns it was learned with: `x` is the accelerometer's third
        // column, and no Step Trainer column.
        assert_eq!(
            read(r#"{"x":5}"#, &mut shape).unwrap()[2],
            Cell::Double(5.0)
        );
        let st = Table::StepTrainerLanding.columns();
        let mut out = vec![Cell::Null; st.len()];
        assert!(parse(r#"{"x":5}"#, st, &mut out, &mut shape).is_some());
        assert_eq!(out, [Cell::Null, Cell::Null, Cell::Null]);
        assert_eq!(shape.fields, [(5, None)]);
    }

    /// The byte-at-a-time answer.
    fn plain(b: &[u8], i: usize) -> Option<usize> {
        let n = b[i..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        (b[i + n] == b'"').then_some(i + n)
    }

    #[test]
    fn a_string_ends_at_its_first_quote_unless_an_escape_or_control_comes_first() {
        // Every stop byte at every position of texts of 0 to 20 bytes, with non-ASCII and
        // near-miss bytes around it (0x20, '#', '[', ']', 0x7f, 0x80, 0xa2, 0xdc, 0xff),
        // and every stop byte again after the first.
        let filler = [
            b'a', 0x20, b'#', b'!', b'[', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ];
        let stops = [b'"', b'\\', 0x00, 0x1f, b'\n'];
        let mut checked = 0;
        for len in 0..=20 {
            for at in 0..=len {
                for &stop in &stops {
                    for &second in &stops {
                        let mut b: Vec<u8> = (0..len).map(|k| filler[k % filler.len()]).collect();
                        b.insert(at, stop);
                        b.push(second);
                        assert_eq!(string_end(&b, 0), plain(&b, 0), "{b:?}");
                        assert_eq!(string_end(&b, 0).is_some(), stop == b'"', "{b:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, (1..=21).sum::<usize>() * 25);
        assert_eq!(string_end(b"abc", 0), None);
        assert_eq!(string_end(b"", 0), None);
        assert_eq!(string_end(b"x", 3), None);
    }

    #[test]
    fn an_integer_read_eight_digits_at_a_time_is_the_digit_loops_answer() {
        // Every count of digits from 0 to 20, signed or not, with and without a leading
        // zero, followed by each byte that can end a number (and a few that cannot), with
        // room for the 16-byte reads or not.
        let followers: [&[u8]; 9] = [
            b",\"x\":1.0}",
            b"}",
            b"",
            b" ,",
            b".5,\"a\":1}",
            b"e3,\"a\":1}",
            b"E3",
            b"x",
            b"/",
        ];
        let mut checked = 0;
        for count in 0..=20 {
            for sign in ["", "-"] {
                for first in [b'0', b'1', b'9'] {
                    for follow in followers {
                        let digits: Vec<u8> = (0..count)
                            .map(|k| if k == 0 { first } else { b"9081726354"[k % 10] })
                            .collect();
                        let b = [sign.as_bytes(), &digits, follow].concat();
                        let loop_answer = number(&b, 0).and_then(whole);
                        assert_eq!(
                            integer(&b, 0),
                            loop_answer,
                            "{}",
                            String::from_utf8_lossy(&b)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 21 * 2 * 3 * 9);
        assert_eq!(
            integer(b"1655564444103,\"x\":1.0,", 0),
            Some((1_655_564_444_103, 13))
        );
        assert_eq!(integer(b"-42,\"padding....\"", 0), Some((-42, 3)));
        assert_eq!(integer(b"12345678,\"padding..\"", 0), Some((12_345_678, 8)));
        assert_eq!(integer(b"-0,\"padding.......\"", 0), None);
        assert_eq!(integer(b"007,\"padding......\"", 0), None);
        assert_eq!(leading_digits(u64::from_le_bytes(*b"0123/:9a")), 4);
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"98765432"), 8),
            98_765_432
        );
        assert_eq!(eight_digits(u64::from_le_bytes(*b"907,xxxx"), 3), 907);
    }

    #[test]
    fn a_one_digit_decimal_read_at_once_is_the_digit_loops_answer() {
        // Every string of up to five bytes over digits, a point, signs, exponents and the
        // bytes that end a value: where the shortcut reads a decimal, it is the cell and
        // end the digit loop gives; it reads exactly the `-?D.D` not followed by a digit, a
        // point or an exponent, `-0.0` excepted.
        let alphabet = b"0159.-eE,} ";
        let (mut checked, mut taken) = (0, 0);
        let mut strings: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = strings
                .iter()
                .filter(|s| s.len() == strings.last().map_or(0, Vec::len))
                .flat_map(|s| alphabet.iter().map(move |&c| [s.as_slice(), &[c]].concat()))
                .collect();
            strings.extend(longer);
        }
        for b in &strings {
            let loop_answer = number(b, 0).and_then(|n| {
                (n.digits < 1 << 53).then(|| {
                    let v = n.digits as f64 / POW10[n.fraction as usize];
                    (Cell::Double(if n.negative { -v } else { v }), n.end)
                })
            });
            if let Some(read) = one_decimal(b, 0) {
                assert_eq!(Some(read), loop_answer, "{}", String::from_utf8_lossy(b));
                taken += 1;
            }
            checked += 1;
        }
        assert_eq!(checked, (0..=5).map(|k| 11usize.pow(k)).sum::<usize>());
        // `D.D` (4 * 4 of them) alone, then before one of the 4 bytes that end it (`-`, `,`,
        // `}`, space), then before an ender and any byte; `-D.D` (16, less `-0.0`) alone and
        // before an ender.
        assert_eq!(taken, 16 + 16 * 4 + 16 * 4 * 11 + 15 + 15 * 4);
        assert_eq!(one_decimal(b"-1.0}", 0), Some((Cell::Double(-1.0), 4)));
        assert_eq!(one_decimal(b"-0.0,", 0), None);
        assert_eq!(one_decimal(b"1.25,", 0), None);
    }

    #[test]
    fn a_prefix_is_held_and_two_strings_are_the_same_where_every_byte_is() {
        // Texts of 0 to 80 bytes, at two positions of a line, equal or differing in any one
        // byte, or cut short by the line's end.
        let line: Vec<u8> = (0..90u8).map(|k| b'!' + k).collect();
        let mut checked = 0;
        for len in 0..=80 {
            for at in [0, 7] {
                let text = line[at..at + len].to_vec();
                assert!(holds(&line, at, &text));
                assert!(!holds(&line[..at + len - usize::from(len > 0)], at, &text) || len == 0);
                for k in 0..len {
                    let mut other = text.clone();
                    other[k] ^= 0x20;
                    assert!(!holds(&line, at, &other), "{len} {at} {k}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * (0..=80).sum::<usize>());
        assert!(!holds(b"ab", 1, b"bc"));
        assert!(same(&line, &line) && !same(&line[1..], &line[..89]));
        assert!(same(b"", b"") && !same(b"a", b""));
    }
}
