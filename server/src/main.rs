//! `ferry-server` binary: flags in, exit code out.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = ferry_server::Args::parse();
    ferry_server::init_logging(args.log_format);
    let config = match ferry_server::Config::from_args(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ferry-server: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry-server: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ferry_server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("ferry-server: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
