//! The `ferry-init` binary: parse flags, validate, fetch, exit 0 only when
//! every item is in place (1 when any failed, 2 for a bad command line).

use std::process::ExitCode;

use clap::Parser;
use ferry_init::{Cli, Config};

fn main() -> ExitCode {
    let config = match Config::from_cli(Cli::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ferry-init: {error}");
            return ExitCode::from(2);
        }
    };
    ferry_init::init_tracing(config.log_format, config.quiet);
    let report = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(ferry_init::run(&config)),
        Err(error) => {
            eprintln!("ferry-init: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    report.print(config.log_format, config.quiet);
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
