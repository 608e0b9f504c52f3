//! The fuzz targets, as plain functions of the input bytes: the
//! `fuzz_targets/` binaries hand libFuzzer's inputs to them, and the test
//! below replays the committed seeds through them in every `cargo test`.
//! Each module's comment states its invariants; a broken one panics.

pub mod aggregator_answers;
pub mod apdu;
pub mod api_request;
pub mod bank_answers;
pub mod bankid_answer;
pub mod bankid_request;
pub mod cap_card;
pub mod category_rules;
pub mod export_round_trip;
pub mod flow_file;
pub mod form_envelope;
pub mod template;
pub mod tlv;
pub mod vpcd_stream;

/// A target: its input's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary and seed folder.
pub const ALL: &[(&str, Target)] = &[
    ("aggregator_answers", aggregator_answers::run),
    ("apdu", apdu::run),
    ("api_request", api_request::run),
    ("bank_answers", bank_answers::run),
    ("bankid_answer", bankid_answer::run),
    ("bankid_request", bankid_request::run),
    ("cap_card", cap_card::run),
    ("category_rules", category_rules::run),
    ("export_round_trip", export_round_trip::run),
    ("flow_file", flow_file::run),
    ("form_envelope", form_envelope::run),
    ("template", template::run),
    ("tlv", tlv::run),
    ("vpcd_stream", vpcd_stream::run),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every target has seeds and a binary, and holds its invariants on
    /// each seed (among them the inputs of defects the fuzzers found).
    #[test]
    fn every_target_holds_on_its_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, run) in super::ALL {
            assert!(
                root.join("fuzz_targets")
                    .join(format!("{name}.rs"))
                    .is_file(),
                "{name} has no binary in fuzz_targets/"
            );
            let mut seeds: Vec<_> = std::fs::read_dir(root.join("seeds").join(name))
                .unwrap_or_else(|e| panic!("{name} has no seed folder: {e}"))
                .map(|entry| entry.expect("a seed").path())
                .collect();
            seeds.sort();
            assert!(!seeds.is_empty(), "{name} has no seeds");
            for seed in seeds {
                let bytes = std::fs::read(&seed).expect("reading a seed");
                eprintln!("{name}: {}", seed.display());
                run(&bytes);
            }
        }
    }
}
