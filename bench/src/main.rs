//! `stedi-bench`: see the library docs for the commands.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;
use stedi_bench::{compute, generate, init_ms, peak_rss_mb};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let scale: i64 = arg(&args, "--scale").context("--scale")?.parse()?;
            let sample = PathBuf::from(arg(&args, "--sample").context("--sample")?);
            let out = PathBuf::from(arg(&args, "--out").context("--out")?);
            generate(&sample, &out, scale, arg(&args, "--only").as_deref())
        }
        Some("compute") => {
            let what = arg(&args, "--what").context("--what")?;
            let data = PathBuf::from(arg(&args, "--data").context("--data")?);
            let mut report = compute(&what, &data)?;
            report["peak_rss_mb"] = json!(peak_rss_mb());
            println!("{report}");
            Ok(())
        }
        Some("init") => {
            let bin = arg(&args, "--bin").context("--bin")?;
            println!("{}", json!({"init_ms": init_ms(&bin)?}));
            Ok(())
        }
        _ => bail!("usage: stedi-bench gen|compute|init …"),
    }
}
