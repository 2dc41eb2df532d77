//! Parses one landing JSON line into typed cells of a table's columns.
//!
//! Field names match case-insensitively (as the landing tables' OpenX JSON SerDe does with
//! `case.insensitive=TRUE`), unknown fields are ignored, and a repeated field keeps its
//! last value. Values are coerced the way Hive would read them: numbers in strings are
//! numbers, an integral float is an integer, a number where a string is expected is its
//! text. Anything else (a fraction where an integer belongs, an object, a missing required
//! field) is an error whose message becomes the quarantine reason.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::schema::{ColType, Column};

mod flat;
pub(crate) use flat::same;

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Absent or JSON null.
    Null,
    /// A string.
    Str(Cow<'a, str>),
    /// A `bigint` or `int`.
    Long(i64),
    /// A `double`.
    Double(f64),
}

impl Cell<'_> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_long(&self) -> Option<i64> {
        match self {
            Cell::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// A copy that owns its data.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
            Cell::Long(v) => Cell::Long(v),
            Cell::Double(v) => Cell::Double(v),
        }
    }
}

/// Parses `line` into `out` (one cell per column, cleared first).
pub fn parse_line<'a>(
    line: &'a [u8],
    columns: &[Column],
    out: &mut Vec<Cell<'a>>,
) -> Result<(), String> {
    LineReader::default().line(line, columns, out)
}

/// [`parse_line`] of a line already known to be UTF-8.
pub fn parse_text<'a>(
    line: &'a str,
    columns: &[Column],
    out: &mut Vec<Cell<'a>>,
) -> Result<(), String> {
    LineReader::default().text(line, columns, out)
}

/// Reads the lines of one table, remembering the field layout of the last line: a line of
/// the same layout is read in one pass straight into the cells ([`flat`]); any other line
/// by sonic-rs, and a line sonic-rs refuses by serde_json, whose message becomes the
/// quarantine reason. The three give the same answer for every line (tested below).
#[derive(Debug, Default)]
pub struct LineReader {
    shape: flat::Shape,
}

impl LineReader {
    /// Parses `line` into `out` (one cell per column, cleared first).
    pub fn line<'a>(
        &mut self,
        line: &'a [u8],
        columns: &[Column],
        out: &mut Vec<Cell<'a>>,
    ) -> Result<(), String> {
        match std::str::from_utf8(line) {
            Ok(text) => self.text(text, columns, out),
            Err(_) => parse_from(sonic_rs::Deserializer::from_slice(line), line, columns, out),
        }
    }

    /// [`LineReader::line`] of a line already known to be UTF-8 (the line splitter
    /// validates a chunk's lines as one block): the readers do not validate it again.
    pub fn text<'a>(
        &mut self,
        line: &'a str,
        columns: &[Column],
        out: &mut Vec<Cell<'a>>,
    ) -> Result<(), String> {
        null_cells(out, columns.len());
        if flat::parse(line, columns, out, &mut self.shape).is_some() {
            return required(columns, out);
        }
        parse_from(
            sonic_rs::Deserializer::from_str(line),
            line.as_bytes(),
            columns,
            out,
        )
    }
}

/// `out` as `n` null cells. Lines of one file have the same columns: the cells of the line
/// before are reset in place (no call into `Vec::resize`, once a line on the hot path).
fn null_cells(out: &mut Vec<Cell<'_>>, n: usize) {
    if out.len() == n {
        out.iter_mut().for_each(|c| *c = Cell::Null);
    } else {
        out.clear();
        out.resize(n, Cell::Null);
    }
}

fn parse_from<'a>(
    mut fast: sonic_rs::Deserializer<sonic_rs::Read<'a>>,
    line: &'a [u8],
    columns: &[Column],
    out: &mut Vec<Cell<'a>>,
) -> Result<(), String> {
    out.clear();
    out.resize(columns.len(), Cell::Null);
    // sonic-rs (SIMD) reads the line; a line it refuses is read again by serde_json, whose
    // message becomes the quarantine reason (the two accept the same lines: tested below).
    if parse_with(&mut fast, columns, out)
        .and_then(|()| fast.end())
        .is_err()
    {
        out.iter_mut().for_each(|c| *c = Cell::Null);
        let mut de = serde_json::Deserializer::from_slice(line);
        parse_with(&mut de, columns, out)
            .and_then(|()| de.end())
            .map_err(|e| e.to_string())?;
    }
    required(columns, out)
}

/// Every required column has a value.
fn required(columns: &[Column], out: &[Cell<'_>]) -> Result<(), String> {
    for (c, cell) in columns.iter().zip(out) {
        if c.required && matches!(cell, Cell::Null) {
            return Err(format!("missing required field `{}`", c.name));
        }
    }
    Ok(())
}

/// Parses one JSON object from `de` into `out` (one cell per column, all `Null` on entry)
/// with the coercions above; the caller checks that nothing follows it. [`parse_line`] runs
/// it over sonic-rs and serde_json; the benchmark also runs it over each alone.
pub fn parse_with<'de, D: Deserializer<'de>>(
    de: D,
    columns: &[Column],
    out: &mut [Cell<'de>],
) -> Result<(), D::Error> {
    RowSeed { columns, out }.deserialize(de)
}

struct RowSeed<'c, 'o, 'a> {
    columns: &'c [Column],
    out: &'o mut [Cell<'a>],
}

impl<'de, 'c, 'o> DeserializeSeed<'de> for RowSeed<'c, 'o, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'c, 'o> Visitor<'de> for RowSeed<'c, 'o, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Fields usually come in column order: the column after the last one matched is
        // tried first.
        let mut next = 0;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match field_index(self.columns, key.as_bytes(), next) {
                Some(i) => {
                    next = i + 1;
                    let ty = self.columns[i].ty;
                    let cell = map.next_value_seed(CellSeed(ty)).map_err(|e| {
                        de::Error::custom(format!("field `{}`: {e}", self.columns[i].name))
                    })?;
                    self.out[i] = cell;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The column a field named `key` fills (names match up to ASCII case), trying column
/// `hint` first.
fn field_index(columns: &[Column], key: &[u8], hint: usize) -> Option<usize> {
    let named = |c: &Column| name_is(c.name.as_bytes(), key);
    if columns.get(hint).is_some_and(named) {
        return Some(hint);
    }
    columns.iter().position(named)
}

/// Whether `key` is the lower-case column name `name` up to ASCII case: each byte is the
/// name's or its upper-case form (only the name's side is folded, and only on a mismatch).
fn name_is(name: &[u8], key: &[u8]) -> bool {
    name.len() == key.len()
        && name
            .iter()
            .zip(key)
            .all(|(&n, &k)| n == k || n.to_ascii_uppercase() == k)
}

/// A key, borrowed from the line when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct CellSeed(ColType);

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

const I32: std::ops::RangeInclusive<i64> = (i32::MIN as i64)..=(i32::MAX as i64);

impl CellSeed {
    fn long<E: de::Error>(&self, v: i64) -> Result<Cell<'static>, E> {
        match self.0 {
            ColType::Long => Ok(Cell::Long(v)),
            ColType::Int if I32.contains(&v) => Ok(Cell::Long(v)),
            ColType::Int => Err(E::custom(format!("{v} is out of range for int"))),
            ColType::Double => Ok(Cell::Double(v as f64)),
            ColType::Str => Ok(Cell::Str(Cow::Owned(v.to_string()))),
        }
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} value", self.0.glue())
    }

    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
        match self.0 {
            ColType::Str => Ok(Cell::Str(Cow::Borrowed(if v { "true" } else { "false" }))),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
        self.long(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
        match i64::try_from(v) {
            Ok(v) => self.long(v),
            Err(_) if self.0 == ColType::Double => Ok(Cell::Double(v as f64)),
            Err(_) if self.0 == ColType::Str => Ok(Cell::Str(Cow::Owned(v.to_string()))),
            Err(_) => Err(E::custom(format!(
                "{v} is out of range for {}",
                self.0.glue()
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
        match self.0 {
            ColType::Double => Ok(Cell::Double(v)),
            ColType::Str => Ok(Cell::Str(Cow::Owned(v.to_string()))),
            ColType::Long | ColType::Int => {
                // 2^63 is exactly representable; anything at or beyond it is out of range.
                if v.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v)
                {
                    self.long(v as i64)
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cell<'de>, E> {
        match self.0 {
            ColType::Str => Ok(Cell::Str(Cow::Borrowed(v))),
            _ => self.visit_str(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell<'de>, E> {
        let t = v.trim();
        match self.0 {
            ColType::Str => Ok(Cell::Str(Cow::Owned(v.to_string()))),
            _ if t.is_empty() => Ok(Cell::Null),
            ColType::Long | ColType::Int => match t.parse::<i64>() {
                Ok(n) => self.long(n),
                Err(_) => match t.parse::<f64>() {
                    Ok(f) => self.visit_f64(f),
                    Err(_) => Err(E::custom(format!("{v:?} is not a number"))),
                },
            },
            ColType::Double => t
                .parse::<f64>()
                .map(Cell::Double)
                .map_err(|_| E::custom(format!("{v:?} is not a number"))),
        }
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Cell<'de>, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Cell<'de>, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Map, &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;

    fn parse(table: Table, line: &str) -> Result<Vec<Cell<'_>>, String> {
        let mut out = Vec::new();
        parse_line(line.as_bytes(), table.columns(), &mut out).map(|()| out)
    }

    fn s(v: &str) -> Cell<'_> {
        Cell::Str(Cow::Borrowed(v))
    }

    #[test]
    fn sample_lines_parse() {
        let a = parse(
            Table::AccelerometerLanding,
            r#"{"user":"Santosh.Clayton@test.com","timestamp":1655564444103,"x":1.0,"y":-1.0,"z":-1}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            [
                s("Santosh.Clayton@test.com"),
                Cell::Long(1655564444103),
                Cell::Double(1.0),
                Cell::Double(-1.0),
                Cell::Double(-1.0)
            ]
        );
        let st = parse(
            Table::StepTrainerLanding,
            r#"{"sensorReadingTime":1655564444103,"serialNumber":"50f7","distanceFromObject":218}"#,
        )
        .unwrap();
        assert_eq!(st, [Cell::Long(1655564444103), s("50f7"), Cell::Long(218)]);
    }

    #[test]
    fn names_are_case_insensitive_unknowns_ignored_last_duplicate_wins() {
        let a = parse(
            Table::AccelerometerLanding,
            r#"{"USER":"u","timeStamp":"1655564376361","x":1,"y":2,"z":3,"extra":{"a":[1]},"x":4}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            [
                s("u"),
                Cell::Long(1655564376361),
                Cell::Double(4.0),
                Cell::Double(2.0),
                Cell::Double(3.0)
            ]
        );
    }

    #[test]
    fn field_names_match_up_to_ascii_case_and_in_any_order() {
        assert!(name_is(b"serialnumber", b"serialNumber"));
        assert!(name_is(b"serialnumber", b"SERIALNUMBER"));
        assert!(!name_is(b"serialnumber", b"serialnumbe"));
        assert!(!name_is(b"serialnumber", b"serialnumberx"));
        // Only letters fold: '_' is not its byte with the case bit (0x7f), '@' is not '`'.
        assert!(name_is(b"a_1", b"A_1"));
        assert!(!name_is(b"a_1", b"a\x7f1"));
        assert!(!name_is(b"a`", b"a@"));
        // Non-ASCII bytes are compared as they are.
        assert!(!name_is(b"user", "us\u{c9}r".as_bytes()));
        // The matcher needs lower-case names: every column of every table has one.
        for t in Table::ALL {
            for c in t.columns() {
                assert_eq!(c.name, c.name.to_ascii_lowercase(), "{}", t.name());
            }
        }
        // The hint is only tried first: a field out of order is still found.
        let cols = Table::AccelerometerLanding.columns();
        assert_eq!(field_index(cols, b"timeStamp", 1), Some(1));
        assert_eq!(field_index(cols, b"Z", 0), Some(4));
        assert_eq!(field_index(cols, b"USER", 3), Some(0));
        assert_eq!(field_index(cols, b"USER", 99), Some(0));
        assert_eq!(field_index(cols, b"timestamps", 1), None);
    }

    #[test]
    fn coercions_and_their_limits() {
        let st = |v: &str| {
            let line =
                format!(r#"{{"sensorReadingTime":1,"serialNumber":"s","distanceFromObject":{v}}}"#);
            parse(Table::StepTrainerLanding, &line).map(|cells| cells[2].clone().into_owned())
        };
        assert_eq!(st("218.0").unwrap(), Cell::Long(218));
        assert_eq!(st("\"218\"").unwrap(), Cell::Long(218));
        assert!(st("218.5").unwrap_err().contains("218.5 is not an integer"));
        assert!(
            st("3000000000")
                .unwrap_err()
                .contains("out of range for int")
        );
        assert!(
            st("\"abc\"")
                .unwrap_err()
                .contains("\"abc\" is not a number")
        );
        assert!(
            st("[1]")
                .unwrap_err()
                .contains("field `distancefromobject`")
        );
        assert_eq!(
            st("null").unwrap_err(),
            "missing required field `distancefromobject`"
        );
    }

    #[test]
    fn customers_keep_optional_fields_null_and_birthday_a_string() {
        let c = parse(
            Table::CustomerLanding,
            r#"{"customerName":"Ben","email":"b@x","birthDay":"1399-01-01","serialNumber":5,"lastUpdateDate":7}"#,
        )
        .unwrap();
        assert_eq!(c[3], s("1399-01-01"));
        assert_eq!(c[4], Cell::Str(Cow::Owned("5".into())));
        assert_eq!(c[7], Cell::Null);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in ["", "{", "[1,2]", "{\"user\":\"u\"} trailing", "\"str\""] {
            assert!(parse(Table::AccelerometerLanding, bad).is_err(), "{bad:?}");
        }
        let mut out = Vec::new();
        let invalid_utf8 = b"{\"user\":\"\xff\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}";
        assert!(
            parse_line(
                invalid_utf8,
                Table::AccelerometerLanding.columns(),
                &mut out
            )
            .is_err()
        );
    }

    /// serde_json alone, as `parse_line` would answer without sonic-rs.
    fn serde_only(table: Table, line: &[u8]) -> Result<Vec<Cell<'static>>, String> {
        let columns = table.columns();
        let mut out = vec![Cell::Null; columns.len()];
        let mut de = serde_json::Deserializer::from_slice(line);
        parse_with(&mut de, columns, &mut out)
            .and_then(|()| de.end())
            .map_err(|e| e.to_string())?;
        for (c, cell) in columns.iter().zip(&out) {
            if c.required && matches!(cell, Cell::Null) {
                return Err(format!("missing required field `{}`", c.name));
            }
        }
        Ok(out.into_iter().map(Cell::into_owned).collect())
    }

    fn both(
        table: Table,
        line: &[u8],
    ) -> (
        Result<Vec<Cell<'static>>, String>,
        Result<Vec<Cell<'static>>, String>,
    ) {
        let mut out = Vec::new();
        let fast = parse_line(line, table.columns(), &mut out)
            .map(|()| out.into_iter().map(Cell::into_owned).collect());
        // A reader that learned the layout of the table's plain line first reads `line`
        // against it: the same answer.
        let mut reader = LineReader::default();
        let mut out = Vec::new();
        let primer = LINES
            .iter()
            .find(|(t, _)| *t == table)
            .map_or("{}", |(_, l)| l);
        assert!(reader.text(primer, table.columns(), &mut out).is_ok());
        let mut out = Vec::new();
        let primed = reader
            .line(line, table.columns(), &mut out)
            .map(|()| out.into_iter().map(Cell::into_owned).collect());
        assert_eq!(primed, fast, "{:?}", String::from_utf8_lossy(line));
        (fast, serde_only(table, line))
    }

    const LINES: [(Table, &str); 4] = [
        (
            Table::AccelerometerLanding,
            r#"{"user":"Santosh.Clayton@test.com","timestamp":1655564444103,"x":1.0,"y":-0.25,"z":-1}"#,
        ),
        (
            Table::StepTrainerLanding,
            r#"{"sensorReadingTime":1655564444103,"serialNumber":"50f7","distanceFromObject":218}"#,
        ),
        (
            Table::CustomerLanding,
            r#"{"customerName":"Ben Ray","email":"b@x.com","phone":"8015551212","birthDay":"1399-01-01","serialNumber":"7a1","registrationDate":1655564376361,"lastUpdateDate":1655564376361,"shareWithResearchAsOfDate":1655564376361,"shareWithPublicAsOfDate":null,"shareWithFriendsAsOfDate":1655564376361,"app":true,"v":-2.5e3}"#,
        ),
        (
            Table::AccelerometerLanding,
            r#" { "USER" : "u" , "timeStamp" : "1655564376361" , "x" : 1e0 , "y" : 2 , "z" : 3.5E-1 , "x" : 4 } "#,
        ),
    ];

    #[test]
    fn plain_lines_give_their_cells() {
        for (table, line) in LINES {
            // sonic-rs itself takes them (no fallback).
            let mut out = vec![Cell::Null; table.columns().len()];
            let mut de = sonic_rs::Deserializer::from_slice(line.as_bytes());
            let taken = parse_with(&mut de, table.columns(), &mut out).and_then(|()| de.end());
            assert!(taken.is_ok(), "{line}");
            let (fast, slow) = both(table, line.as_bytes());
            assert!(fast.is_ok(), "{line}");
            assert_eq!(fast, slow, "{line}");
        }
        let (fast, _) = both(Table::AccelerometerLanding, LINES[3].1.as_bytes());
        assert_eq!(
            fast.unwrap(),
            [
                s("u"),
                Cell::Long(1655564376361),
                Cell::Double(4.0),
                Cell::Double(2.0),
                Cell::Double(0.35)
            ]
        );
    }

    #[test]
    fn the_flat_path_takes_plain_lines_and_leaves_the_rest_to_the_full_reader() {
        let cols = Table::AccelerometerLanding.columns();
        let flat = |line: &'static str| {
            let mut out = vec![Cell::Null; cols.len()];
            flat::parse(line, cols, &mut out, &mut flat::Shape::default()).map(|()| out)
        };
        let plain = [
            (
                LINES[0].1,
                [s("Santosh.Clayton@test.com"), Cell::Long(1655564444103)],
            ),
            (
                r#" { "USER" : "a b" , "TimeStamp":-12 ,"x":0.5,"y":-3,"z":null,"w":"?","v":1.25,"u":null } "#,
                [s("a b"), Cell::Long(-12)],
            ),
            (
                r#"{"user":"u","timestamp":1,"user":"v"}"#,
                [s("v"), Cell::Long(1)],
            ),
        ];
        for (line, head) in &plain {
            let cells = flat(line).unwrap_or_else(|| panic!("not taken: {line}"));
            assert_eq!(cells[..2], *head, "{line}");
        }
        assert_eq!(
            flat(plain[1].0).unwrap()[2..],
            [Cell::Double(0.5), Cell::Double(-3.0), Cell::Null]
        );
        assert_eq!(flat("{}").unwrap(), vec![Cell::Null; 5]);
        let st = Table::StepTrainerLanding.columns();
        let mut out = vec![Cell::Null; st.len()];
        assert!(flat::parse(LINES[1].1, st, &mut out, &mut flat::Shape::default()).is_some());
        assert_eq!(out, [Cell::Long(1655564444103), s("50f7"), Cell::Long(218)]);
        // Each of these needs the full reader: an escape, an exponent, a number in a string,
        // a fraction for an integer, `-0`, a boolean, a nested value, 19 digits, a
        // decimal beyond 2^53, an int out of range, a control character, malformed JSON.
        let full = [
            r#"{"user":"a\"b","timestamp":1}"#,
            r#"{"us\u0065r":"a","timestamp":1}"#,
            r#"{"user":"u","timestamp":1,"x":1e0}"#,
            r#"{"user":"u","timestamp":"1"}"#,
            r#"{"user":"u","timestamp":1.0}"#,
            r#"{"user":"u","timestamp":-0}"#,
            r#"{"user":"u","timestamp":1,"x":-0.0}"#,
            r#"{"user":"u","timestamp":1,"app":true}"#,
            r#"{"user":"u","timestamp":1,"extra":[1]}"#,
            r#"{"user":5,"timestamp":1}"#,
            r#"{"user":"u","timestamp":1234567890123456789}"#,
            r#"{"user":"u","timestamp":1,"x":12345678901234567.8}"#,
            "{\"user\":\"a\tb\",\"timestamp\":1}",
            r#"{"user":"u","timestamp":01}"#,
            r#"{"user":"u","timestamp":1.}"#,
            r#"{"user":"u","timestamp":1,}"#,
            r#"{"user":"u","timestamp":1} x"#,
            r#"{"user":"u","timestamp":nul}"#,
            r#"{"user":"u" "timestamp":1}"#,
            "[1]",
            "",
        ];
        for line in full {
            assert!(flat(line).is_none(), "taken: {line}");
        }
        let mut out = vec![Cell::Null; st.len()];
        let big = r#"{"sensorReadingTime":1,"serialNumber":"s","distanceFromObject":3000000000}"#;
        assert!(flat::parse(big, st, &mut out, &mut flat::Shape::default()).is_none());
    }

    #[test]
    fn sonic_rs_and_serde_json_agree_on_every_variant() {
        let tricky = [
            r#"{"user":"a\"b","timestamp":1,"x":1,"y":1,"z":1}"#,
            r#"{"user":"\u0041","timestamp":1,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":01,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":-,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1.,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":.5,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1e400,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":99999999999999999999,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":123456789012345678,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1.5,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1,"x":0.1000000000000000055511151231257827,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1,"x":1,"y":1,"z":1,}"#,
            r#"{"user":"u","timestamp":1,"x":1,"y":1,"z":1}}"#,
            r#"{"user":"u","timestamp":1,"x":1,"y":1,"z":1} x"#,
            r#"{"user":"u","timestamp":1,"x":true,"y":1,"z":1}"#,
            r#"{"user":true,"timestamp":1,"x":1,"y":1,"z":1}"#,
            r#"{"user":"u","timestamp":1,"x":1,"y":1,"z":1,"extra":[1,{"a":2}]}"#,
            r#"{"user":"u","timestamp":1,"x":1,"y":1,"z":1,"extra":nul}"#,
            r#"{"user":"u","timestamp":" 7 ","x":"","y":"1.5","z":"abc"}"#,
            r#"{"user":5,"timestamp":-0,"x":-0.0,"y":1,"z":1}"#,
            r#"{"user":1.50,"timestamp":1,"x":1,"y":1,"z":1}"#,
            "{\"user\":\"tab\there\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}",
            "{\"us\u{e9}r\":\"\u{e9}\",\"timestamp\":1,\"x\":1,\"y\":1,\"z\":1}",
            "{}",
            "",
            "[]",
            r#"{"user":null}"#,
        ];
        for line in tricky {
            let (fast, slow) = both(Table::AccelerometerLanding, line.as_bytes());
            assert_eq!(fast, slow, "{line}");
        }
        // Every prefix and every one-byte change of the plain lines, in every table.
        let swaps = [
            b'"', b'\\', b'{', b'}', b',', b':', b' ', b'0', b'-', b'.', b'e', 0x01, 0xff,
        ];
        let mut checked = 0;
        for (table, line) in LINES {
            let bytes = line.as_bytes();
            for cut in 0..bytes.len() {
                let (fast, slow) = both(table, &bytes[..cut]);
                assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&bytes[..cut]));
                for &b in &swaps {
                    let mut changed = bytes.to_vec();
                    changed[cut] = b;
                    let (fast, slow) = both(table, &changed);
                    assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&changed));
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            LINES.iter().map(|(_, l)| l.len()).sum::<usize>() * swaps.len()
        );
    }

    #[test]
    fn short_decimals_are_correctly_rounded() {
        // A fixed-seed walk over decimals of 1 to 17 significant digits, either sign.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        for _ in 0..20_000 {
            let digits = 1 + next() % 17;
            let frac = 1 + next() % digits.min(16);
            let mut n = (next() % 10u64.pow(digits as u32)).to_string();
            while n.len() <= frac as usize {
                n.insert(0, '0');
            }
            n.insert(n.len() - frac as usize, '.');
            let text = if next() % 2 == 0 { format!("-{n}") } else { n };
            let line = format!(r#"{{"user":"u","timestamp":1,"x":{text},"y":1,"z":1}}"#);
            let (fast, slow) = both(Table::AccelerometerLanding, line.as_bytes());
            assert_eq!(fast, slow, "{text}");
            assert_eq!(
                fast.unwrap()[2],
                Cell::Double(text.parse().unwrap()),
                "{text}"
            );
        }
    }
}
