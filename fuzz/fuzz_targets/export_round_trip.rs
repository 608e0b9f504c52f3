#![no_main]
libfuzzer_sys::fuzz_target!(
    init: bankbridge_fuzz::targets::export_round_trip::init(),
    |data: &[u8]| bankbridge_fuzz::targets::export_round_trip::run(data)
);
