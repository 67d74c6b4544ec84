#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    greenlight::install_crypto_provider();
    greenlight::cli::main()
}
