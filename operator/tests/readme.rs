//! The README's table of conditions and reasons lists exactly the ones Verbund sets.

use std::collections::BTreeSet;

use verbund_operator::conditions::{kind, reason};
use verbund_operator::controller::error::CATEGORIES;

#[test]
fn the_readme_lists_exactly_the_conditions_reasons_and_categories() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap_or_default();
    let start = readme.find("<!-- conditions -->");
    let end = readme.find("<!-- /conditions -->");
    let (Some(start), Some(end)) = (start, end) else {
        panic!("README.md has no <!-- conditions --> section");
    };
    // The tables' cells; the prose around them may quote other things.
    let listed: BTreeSet<&str> = readme[start..end]
        .lines()
        .filter(|line| line.starts_with('|'))
        .flat_map(|line| line.split('`').skip(1).step_by(2))
        .collect();
    let defined: BTreeSet<&str> = kind::ALL
        .iter()
        .chain(reason::ALL.iter())
        .chain(CATEGORIES.iter())
        .copied()
        .collect();
    let missing: Vec<_> = defined.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&defined).collect();
    assert!(missing.is_empty(), "README.md does not list {missing:?}");
    assert!(
        unknown.is_empty(),
        "README.md lists what Verbund never sets: {unknown:?}"
    );
}
