#![no_main]
libfuzzer_sys::fuzz_target!(
    init: bankbridge_fuzz::targets::api_request::init(),
    |data: &[u8]| bankbridge_fuzz::targets::api_request::run(data)
);
