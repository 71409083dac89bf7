//! `ferry-bench`: parse the command line, validate it, run the benchmark.

use clap::Parser;
use ferry_benches::config::{Cli, Config};

fn main() -> anyhow::Result<()> {
    let config = Config::from_cli(Cli::parse())?;
    ferry_benches::run(config)?;
    Ok(())
}
