#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bankbridge_fuzz::targets::aggregator_answers::run(data));
