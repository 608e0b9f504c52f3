#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bankbridge_fuzz::targets::form_envelope::run(data));
