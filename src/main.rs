//! The `sotto` binary's edge: parses the command line, runs the command (`cli`), and turns
//! an error into one `error: …` line on stderr and a non-zero exit. Logs go to a file, never
//! to the terminal.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything is created: profiles, databases, logs and keys are the user's alone.
    sotto::private::restrict_umask();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
