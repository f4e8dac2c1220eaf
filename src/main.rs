//! The `influencer-analytics` binary: parse the command line, hand the role to the library.

use std::process::ExitCode;

use clap::Parser;
use influencer_analytics::{cli, telemetry, tls};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return cli::report_usage_error(error),
    };
    telemetry::init_tracing(cli.log_format);
    // rustls' provider for every TLS connection (reqwest has none of its own).
    tls::install_crypto_provider();
    // Count from the first event, not from the first scrape.
    telemetry::metrics();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
