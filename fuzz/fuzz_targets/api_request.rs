#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bankbridge_fuzz::targets::api_request::run(data));
