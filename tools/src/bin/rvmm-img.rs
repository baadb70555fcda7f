//! `rvmm-img`: create, inspect, check, convert and benchmark disk images (qemu-img compatible).

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = tools::img::Cli::parse();
    match tools::img::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rvmm-img: {e:#}");
            std::process::exit(1);
        }
    }
}
