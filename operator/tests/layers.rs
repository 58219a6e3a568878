//! The crate's layers, enforced: a module uses only modules of its own layer or below, and one
//! controller never reaches into another's internals (what two need moves down).
//!
//! From the bottom: `api` -> `quantity`, `meta`, `conditions`, `metrics`, `telemetry` ->
//! `domain` -> `placement`, `baseline`, `isolation`, `cache` -> `controller`, `pool_metrics`, `catalog` -> `admin`, `leader`, `runtime`, `rbac` ->
//! `cli`.

// A test that cannot read the sources must fail, saying why.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LAYERS: [(&str, u8); 20] = [
    ("api", 0),
    ("quantity", 1),
    ("meta", 1),
    ("conditions", 1),
    ("metrics", 1),
    ("telemetry", 1),
    ("domain", 2),
    ("placement", 3),
    ("baseline", 3),
    ("cache", 3),
    ("isolation", 3),
    ("controller", 4),
    ("pool_metrics", 4),
    ("catalog", 4),
    ("admin", 5),
    ("leader", 5),
    ("runtime", 5),
    ("rbac", 5),
    ("cli", 6),
    ("testing", 9),
];

const CONTROLLERS: [&str; 4] = ["site", "tenant", "portal_service", "baseline"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test module (tests may use whatever they like).
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The crate modules `code` names: `crate::x`, and each `x` of `crate::{x, y::z}`.
fn crate_imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_uses_a_layer_above_it_and_controllers_keep_to_themselves() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeMap<&str, u8> = LAYERS.into_iter().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let module = parts[0].as_str();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module) else {
            violations.push(format!(
                "{}: module {module} has no layer; add it to LAYERS",
                relative.display()
            ));
            continue;
        };
        let code = production_code(file);
        for import in crate_imports(&code) {
            match layers.get(import.as_str()) {
                Some(&layer) if layer > own => violations.push(format!(
                    "{}: {module} (layer {own}) uses crate::{import} (layer {layer})",
                    relative.display()
                )),
                None => violations.push(format!(
                    "{}: crate::{import} has no layer",
                    relative.display()
                )),
                _ => {}
            }
        }
        // controller/<kind>/...: no other kind's modules.
        if module == "controller" && parts.len() > 2 {
            let kind = parts[1].as_str();
            for other in CONTROLLERS.iter().filter(|k| **k != kind) {
                for needle in [
                    format!("controller::{other}"),
                    format!("super::super::{other}"),
                ] {
                    if code.contains(&needle) {
                        violations.push(format!(
                            "{}: the {kind} controller reaches into the {other} controller ({needle})",
                            relative.display()
                        ));
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked > 30,
        "only {checked} files checked: is the walk right?"
    );
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_import_reader_sees_grouped_and_plain_imports() {
    let code = "use crate::{api::Site, domain::sites};\nuse crate::meta;\nlet x = crate::controller::run();";
    assert_eq!(crate_imports(code), ["api", "domain", "meta", "controller"]);
}
