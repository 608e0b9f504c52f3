//! `{{ name }}` templates in flows, over captured values. Invariants: no
//! panic; `names` and `render` agree on what a template refers to (a
//! template whose names are all set renders); rendering a text without
//! braces gives it back.
use bankbridge_checks::template::{self, Scope};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut scope = Scope::new();
    if let Ok(names) = template::names(text) {
        for (i, name) in names.iter().enumerate() {
            scope.set(*name, serde_json::json!(format!("v{i}")));
        }
        scope
            .render(text)
            .expect("a template whose names are all set renders");
    } else {
        assert!(
            scope.render(text).is_err(),
            "render refuses what names refuses: {text:?}"
        );
    }
    if !text.contains('{') && !text.contains('}') {
        assert_eq!(Scope::new().render(text).as_deref(), Ok(text));
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = template::names_in_json(&value);
        let _ = scope.render_json(&value);
    }
}
