//! `ferry` binary: flags in, exit code out.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ferry_client::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.quiet { "error" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ferry_client::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("ferry: {}", ferry_io::render_chain(&*error));
            ExitCode::FAILURE
        }
    }
}
