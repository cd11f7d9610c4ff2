//! The `tokenhub-admin` sidecar binary: see `tokenhub_guard::admin`.
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(tokenhub_guard::admin::cli::main())
}
