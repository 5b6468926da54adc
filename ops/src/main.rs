//! `connector-ops`: the operator's command-line tool. The logic is in the library (`src/lib.rs`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    connector_ops::main_with_args(std::env::args_os()).await
}
