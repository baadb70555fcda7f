fn main() {
    eprintln!("rvmm: not built yet");
    std::process::exit(1);
}
