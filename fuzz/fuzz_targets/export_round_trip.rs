#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bankbridge_fuzz::targets::export_round_trip::run(data));
