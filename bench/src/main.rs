//! `stedi-bench`: see the library docs for the commands.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::json;
use stedi_bench::{compute, generate, init_ms, parse_candidate, peak_rss_mb};

/// The benchmark's Rust side: data generator, in-process compute path, parser candidates,
/// cold start.
#[derive(Parser)]
#[command(name = "stedi-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A landing dataset N times the sample.
    Gen {
        /// N: replicas of the sample.
        #[arg(long)]
        scale: i64,
        /// The sample's data folder.
        #[arg(long)]
        sample: PathBuf,
        /// Where the dataset goes.
        #[arg(long)]
        out: PathBuf,
        /// One reading file generated N-fold (the one-big-file memory test).
        #[arg(long)]
        only: Option<String>,
    },
    /// The functions' compute path in this process; prints one JSON line.
    Compute {
        /// customer | accelerometer | step_trainer | machine_learning | machine_learning_pairs |
        /// pipeline
        #[arg(long)]
        what: String,
        /// A data folder (the sample or a generated one).
        #[arg(long)]
        data: PathBuf,
    },
    /// One landing JSON parser over every line of a zone's files; prints one JSON line.
    Parse {
        /// none | serde_json | sonic_rs | stedi | arrow_json
        #[arg(long)]
        parser: String,
        /// accelerometer | step_trainer | customer
        #[arg(long)]
        zone: String,
        /// A data folder.
        #[arg(long)]
        data: PathBuf,
    },
    /// Cold start of a function binary: exec to its first Runtime API call.
    Init {
        /// The binary.
        #[arg(long)]
        bin: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen {
            scale,
            sample,
            out,
            only,
        } => generate(&sample, &out, scale, only.as_deref()),
        Command::Compute { what, data } => {
            let mut report = compute(&what, &data)?;
            report["peak_rss_mb"] = json!(peak_rss_mb());
            println!("{report}");
            Ok(())
        }
        Command::Parse { parser, zone, data } => {
            println!("{}", parse_candidate(&parser, &zone, &data)?);
            Ok(())
        }
        Command::Init { bin } => {
            println!("{}", json!({"init_ms": init_ms(&bin)?}));
            Ok(())
        }
    }
}
