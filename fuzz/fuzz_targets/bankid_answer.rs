#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bankbridge_fuzz::targets::bankid_answer::run(data));
