//! Integration tests: every test starts its own moto_server and drives the real event path
//! (S3 → EventBridge → SQS → handler → Parquet + Glue).

mod compaction;
mod concurrency;
mod drop;
mod erasure;
mod events;
mod hostile;
mod iam;
mod interop;
mod layout;
mod ml;
mod order;
mod pipeline;
mod query;
mod reconcile;
mod rows;
mod scale;
