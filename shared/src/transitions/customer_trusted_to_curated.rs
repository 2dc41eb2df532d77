//! accelerometer_trusted (new object) → customer_curated: the trusted customers who have
//! readings. The object's distinct users are added to the snapshot (conditional write).

use std::collections::BTreeSet;

use arrow_array::StringArray;

use crate::columnar::{column, read_parquet};
use crate::error::Result;
use crate::keys::SourceKey;
use crate::rules;
use crate::schema::Table;
use crate::store::Fetched;
use crate::summary::Summary;

use super::{Ctx, rewrite_snapshot};

/// Adds the users of one accelerometer_trusted object to customer_curated.
pub async fn run(ctx: &Ctx, bucket: &str, src: &SourceKey) -> Result<Summary> {
    let mut s = Summary::default();
    let Fetched::Body(bytes, _) = ctx.store.fetch(bucket, &src.key, None).await? else {
        // Replaced or deleted since the event: the newer object has its own event.
        return Ok(s);
    };
    let mut users = BTreeSet::new();
    for b in read_parquet(bytes, &["user"], &src.key)? {
        let col = column::<StringArray>(&b, "user", &src.key)?;
        s.rows_in += b.num_rows() as u64;
        users.extend(col.iter().flatten().map(str::to_string));
    }
    let (trusted, _) = ctx.customers(bucket, Table::CustomerTrusted).await?;
    let known: Vec<String> = users
        .iter()
        .filter(|u| trusted.rows.contains_key(*u))
        .cloned()
        .collect();
    s.rows_out = known.len() as u64;
    s.filtered = (users.len() - known.len()) as u64;
    rewrite_snapshot(ctx, bucket, Table::CustomerCurated, &mut s, |current| {
        let next = rules::merge_curated(current, &trusted, known.iter().cloned());
        (next != *current).then_some(next)
    })
    .await?;
    Ok(s)
}
