//! Runs every consumer registered with `logpipe::register_consumer!` in the code linked
//! into this program, until SIGINT or SIGTERM.

fn main() -> std::process::ExitCode {
    logpipe::cli::run_consumers_main()
}
