//! Runs one target on the given inputs without libFuzzer (for a debugger or
//! `ZREPL_FUZZ_TRACE=1`, which makes the client target print every call's result). From
//! `fuzz/`: `cargo run --example replay -- client seeds/client/*`.

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: replay TARGET FILE...");
    let run: fn(&[u8]) = match target.as_str() {
        "sender_dispatch" => zrepl_fuzz::sender_dispatch::run,
        "client" => zrepl_fuzz::client::run,
        "zfs_output" => zrepl_fuzz::zfs_output::run,
        other => panic!("{other}: not a library target (run its fuzz binary on the file instead)"),
    };
    for f in args {
        eprintln!("== {f}");
        run(&std::fs::read(&f).expect("read input"));
    }
}
