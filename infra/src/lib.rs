//! The local stack and the `stedi` command: moto_server, the stack built from
//! `template.yaml` and the shared schemas, the local SQS runner, and lake utilities.

pub mod ddl;
pub mod lake;
pub mod moto;
pub mod query;
pub mod runner;
pub mod s3store;
pub mod stack;
pub mod synthetic;
pub mod template;

use std::path::PathBuf;

/// The project root: `STEDI_HOME`, else the workspace this crate was built in.
pub fn project_root() -> PathBuf {
    std::env::var_os("STEDI_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))
}
