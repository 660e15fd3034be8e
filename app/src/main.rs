//! `condenser`: the command-line face of the Condenser engine. It parses arguments, prints
//! progress and errors, and calls the engine; it computes nothing itself.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    condenser_engine::backend::tune_allocator();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,condenser=info,condenser_engine=info"),
    )
    .format_timestamp(None)
    .format_target(false)
    .init();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
