//! The `saltpeter` binary: parses arguments, sets up tracing, and hands over to the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
