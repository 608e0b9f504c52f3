//! The crate map's arrows, checked on the real dependency graph (`cargo
//! metadata`): library crates know nothing of HTTP servers, and nothing
//! that ships depends on the simulators, except the binary whose `demo`
//! and `sandbox` commands run them.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Command;

use serde_json::Value;

/// Crates that hold logic and must stay usable without any HTTP server.
const LIBRARIES: [&str; 7] = [
    "bankbridge-core",
    "bankbridge-store",
    "bankbridge-sync",
    "bankbridge-connectors",
    "bankbridge-cap",
    "bankbridge-bankid",
    "bankbridge-checks",
];

/// HTTP server frameworks. (`hyper` and `tower-http` are not here: HTTP
/// clients such as reqwest are built on them too.)
const SERVER_FRAMEWORKS: [&str; 9] = [
    "axum",
    "axum-core",
    "actix-web",
    "warp",
    "rocket",
    "poem",
    "tide",
    "salvo",
    "gotham",
];

const SANDBOX: &str = "bankbridge-sandbox";
/// May depend on the sandbox: the `bankbridge` binary (its `demo` and
/// `sandbox` commands), the benchmark it runs, the sandbox itself, and the
/// fuzz targets (which replay the simulators' answers; never shipped).
const MAY_USE_SANDBOX: [&str; 4] = ["bankbridge", "bankbridge-bench", "bankbridge-fuzz", SANDBOX];

struct Graph {
    names: HashMap<String, String>,
    /// Package id → ids of its normal (not dev, not build) dependencies.
    normal: HashMap<String, Vec<String>>,
    members: Vec<String>,
}

fn graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut normal = HashMap::new();
    for node in m["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_owned())
            .collect();
        normal.insert(node["id"].as_str().unwrap().to_owned(), deps);
    }
    let members = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    Graph {
        names,
        normal,
        members,
    }
}

impl Graph {
    fn id_of(&self, name: &str) -> &str {
        self.members
            .iter()
            .find(|id| self.names[*id] == name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"))
    }

    /// Names of every package `id` pulls in at run time, with the path to each.
    fn reaches(&self, id: &str) -> HashMap<String, Vec<String>> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut paths = HashMap::new();
        let mut todo = vec![(id, vec![self.names[id].clone()])];
        while let Some((at, path)) = todo.pop() {
            for dep in self.normal.get(at).into_iter().flatten() {
                if seen.insert(dep) {
                    let mut p = path.clone();
                    p.push(self.names[dep].clone());
                    paths.insert(self.names[dep].clone(), p.clone());
                    todo.push((dep, p));
                }
            }
        }
        paths
    }
}

#[test]
fn library_crates_depend_on_no_http_server_framework() {
    let g = graph();
    let mut wrong = BTreeSet::new();
    for lib in LIBRARIES {
        let reached = g.reaches(g.id_of(lib));
        for framework in SERVER_FRAMEWORKS {
            if let Some(path) = reached.get(framework) {
                wrong.insert(path.join(" → "));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "library crates reach an HTTP server framework:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn nothing_that_ships_depends_on_the_simulators() {
    let g = graph();
    let mut wrong = BTreeSet::new();
    for id in &g.members {
        let name = &g.names[id];
        if MAY_USE_SANDBOX.contains(&name.as_str()) {
            continue;
        }
        if let Some(path) = g.reaches(id).get(SANDBOX) {
            wrong.insert(path.join(" → "));
        }
    }
    assert!(
        wrong.is_empty(),
        "production crates depend on the sandbox:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checks_see_every_library_and_the_sandbox() {
    // A renamed crate must not make the checks above pass by matching nothing.
    let g = graph();
    for name in LIBRARIES.iter().chain([&SANDBOX, &"bankbridge-server"]) {
        g.id_of(name);
    }
    // And the graph walk finds what is there: the server runs on axum.
    assert!(g.reaches(g.id_of("bankbridge-server")).contains_key("axum"));
}
