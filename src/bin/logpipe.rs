//! The logpipe operator tool.

fn main() -> std::process::ExitCode {
    logpipe::cli::logpipe_main()
}
