//! Flow files as people write them (TOML). Invariants: no panic; a file
//! that parses gives the same flow when parsed again, and the error list
//! of one that does not is never empty and names the file.
use bankbridge_checks::flow;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match flow::parse_all_errors("fuzz", "fuzz.toml", text) {
        Ok(parsed) => {
            let again = flow::parse("fuzz", "fuzz.toml", text).expect("the same text parses again");
            assert_eq!(format!("{parsed:?}"), format!("{again:?}"));
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused file says why");
            for e in errors {
                assert!(e.to_string().contains("fuzz.toml"), "{e}");
            }
        }
    }
}
