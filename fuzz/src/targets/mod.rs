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
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn seeds_of(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let mut seeds: Vec<_> = std::fs::read_dir(root().join("seeds").join(name))
            .unwrap_or_else(|e| panic!("{name} has no seed folder: {e}"))
            .map(|entry| {
                let path = entry.expect("a seed").path();
                let bytes = std::fs::read(&path).expect("reading a seed");
                (path, bytes)
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{name} has no seeds");
        seeds
    }

    /// Every target has seeds and a binary, and holds its invariants on
    /// each seed (among them the inputs of defects the fuzzers found).
    #[test]
    fn every_target_holds_on_its_seeds() {
        for (name, run) in super::ALL {
            assert!(
                root()
                    .join("fuzz_targets")
                    .join(format!("{name}.rs"))
                    .is_file(),
                "{name} has no binary in fuzz_targets/"
            );
            for (path, bytes) in seeds_of(name) {
                eprintln!("{name}: {}", path.display());
                run(&bytes);
            }
        }
    }

    /// An input near the seeds: one to four flips, overwrites, deletions,
    /// duplications, insertions or splices of another seed.
    fn mutant(seeds: &[(PathBuf, Vec<u8>)], rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut input = seeds[rng.random_range(0..seeds.len())].1.clone();
        for _ in 0..rng.random_range(1..=4) {
            let len = input.len();
            let at = rng.random_range(0..=len);
            match rng.random_range(0..6) {
                0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.random_range(0..8),
                1 if len > 0 => input[at.min(len - 1)] = rng.random(),
                2 => {
                    let end = rng.random_range(at..=len);
                    input.drain(at..end);
                }
                3 => {
                    let end = rng.random_range(at..=len.min(at + 64));
                    let copy = input[at..end].to_vec();
                    input.splice(at..at, copy);
                }
                4 => {
                    let bytes: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    input.splice(at..at, bytes);
                }
                _ => {
                    let other = &seeds[rng.random_range(0..seeds.len())].1;
                    let from = rng.random_range(0..=other.len());
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
        }
        input
    }

    /// A short run of every target in each `cargo test` (so in CI): inputs
    /// mutated from its seeds for about a second. It is not coverage-guided
    /// (`scripts/fuzz.sh` is); it catches a change that breaks an
    /// invariant near the seeds. A failing input is saved under
    /// `target/fuzz-mutants/` for `cargo fuzz run TARGET FILE`.
    #[test]
    fn every_target_holds_on_mutants_of_its_seeds() {
        const BUDGET: Duration = Duration::from_secs(1);
        for (name, run) in super::ALL {
            let seeds = seeds_of(name);
            let mut rng = ChaCha8Rng::seed_from_u64(20_261_207);
            let started = Instant::now();
            let mut runs = 0;
            while runs < 20_000 && started.elapsed() < BUDGET {
                let input = mutant(&seeds, &mut rng);
                if let Err(panic) = std::panic::catch_unwind(|| run(&input)) {
                    let dir = root().join("../target/fuzz-mutants");
                    let _ = std::fs::create_dir_all(&dir);
                    let file = dir.join(format!("{name}-{runs}"));
                    let _ = std::fs::write(&file, &input);
                    std::panic::resume_unwind(Box::new(format!(
                        "{name} broke on a mutant of its seeds, saved as {}: {}",
                        file.display(),
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("(no message)")
                    )));
                }
                runs += 1;
            }
            eprintln!(
                "{name}: {runs} mutants in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}
