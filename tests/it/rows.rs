//! Reading the lake's tables back as sorted tuples, to compare with the batch truth.

use arrow_array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use stedi::columnar::column;
use stedi_tests::truth::{Accel, Ml, Step};

fn s<'a>(b: &'a RecordBatch, n: &str) -> &'a StringArray {
    column::<StringArray>(b, n, "test").unwrap()
}
fn l<'a>(b: &'a RecordBatch, n: &str) -> &'a Int64Array {
    column::<Int64Array>(b, n, "test").unwrap()
}
fn i<'a>(b: &'a RecordBatch, n: &str) -> &'a Int32Array {
    column::<Int32Array>(b, n, "test").unwrap()
}
fn d(b: &RecordBatch, n: &str, r: usize) -> u64 {
    column::<Float64Array>(b, n, "test")
        .unwrap()
        .value(r)
        .to_bits()
}

pub fn emails(batches: &[RecordBatch]) -> Vec<String> {
    let mut out: Vec<String> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |r| s(b, "email").value(r).to_string()))
        .collect();
    out.sort();
    out
}

/// E-mail → the string column `name` of a customer table's rows (null as "").
pub fn field(batches: &[RecordBatch], name: &str) -> std::collections::BTreeMap<String, String> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                let v = s(b, name);
                let v = if v.is_null(r) { "" } else { v.value(r) };
                (s(b, "email").value(r).to_string(), v.to_string())
            })
        })
        .collect()
}

pub fn accel(batches: &[RecordBatch]) -> Vec<Accel> {
    let mut out: Vec<Accel> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                (
                    s(b, "user").value(r).to_string(),
                    l(b, "timestamp").value(r),
                    d(b, "x", r),
                    d(b, "y", r),
                    d(b, "z", r),
                )
            })
        })
        .collect();
    out.sort();
    out
}

pub fn steps(batches: &[RecordBatch]) -> Vec<Step> {
    let mut out: Vec<Step> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                (
                    l(b, "sensorreadingtime").value(r),
                    s(b, "serialnumber").value(r).to_string(),
                    i64::from(i(b, "distancefromobject").value(r)),
                )
            })
        })
        .collect();
    out.sort();
    out
}

pub fn ml(batches: &[RecordBatch]) -> Vec<Ml> {
    let mut out: Vec<Ml> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                (
                    l(b, "sensorreadingtime").value(r),
                    s(b, "serialnumber").value(r).to_string(),
                    i64::from(i(b, "distancefromobject").value(r)),
                    d(b, "x", r),
                    d(b, "y", r),
                    d(b, "z", r),
                )
            })
        })
        .collect();
    out.sort();
    out
}
