//! The `axon` binary.

fn main() -> std::process::ExitCode {
    axon_homeserver::cli::main()
}
