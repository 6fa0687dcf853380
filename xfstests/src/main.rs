//! `xfstests`: parses the command line and runs the harness (see the library docs).

use clap::Parser;

fn main() {
    let cli = xfstests::cli::Cli::parse();
    match xfstests::main_with(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xfstests: {e:#}");
            std::process::exit(2);
        }
    }
}
