//! `ferry-server` binary: flags in, exit code out.

use std::process::ExitCode;

use clap::Parser;
use ferry_server::config::Command;

fn main() -> ExitCode {
    let mut args = ferry_server::Args::parse();
    ferry_server::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command.take() {
        Some(Command::Fsck {
            quarantine,
            jobs,
            json,
        }) => runtime.block_on(ferry_server::run_fsck(&args.data, quarantine, jobs, json)),
        None => {
            let config = match ferry_server::Config::from_args(args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("ferry-server: {error}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(ferry_server::run(config)).map(|()| 0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let error = ferry_io::render_chain(error.as_ref());
            tracing::error!("{error}");
            eprintln!("ferry-server: {error}");
            ExitCode::FAILURE
        }
    }
}
