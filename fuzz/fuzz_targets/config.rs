//! Fuzzes config parsing: any input must yield a config or errors, never a panic or a hang.
//!
//!   cargo +nightly fuzz run config -- -max_total_time=300    # from fuzz/
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let loader = zrepl_config::MemLoader::default();
    if let Ok(loaded) = zrepl_config::load_str(src, Path::new("/fuzz/zrepl.yml"), &loader) {
        // Whatever is accepted must print and load back to the same config.
        let json = zrepl_config::emit::to_json_value(&loaded.config).to_string();
        let again = zrepl_config::load_str(&json, Path::new("/fuzz/resolved.yml"), &loader)
            .expect("resolved config must load again");
        assert_eq!(loaded.config, again.config);
    }
});
