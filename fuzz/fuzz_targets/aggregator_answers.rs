#![no_main]
libfuzzer_sys::fuzz_target!(
    init: bankbridge_fuzz::targets::aggregator_answers::init(),
    |data: &[u8]| bankbridge_fuzz::targets::aggregator_answers::run(data)
);
