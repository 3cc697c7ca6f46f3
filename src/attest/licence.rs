//! A distribution's licence as an SBOM states it, from what its metadata
//! says: PEP 639's `License-Expression` when it is a valid SPDX expression;
//! else the free-text `License` field when it is one (many packages write
//! `MIT` or `Apache-2.0` there); else its one `License ::` trove classifier
//! when that names a single SPDX licence; else the text itself under a
//! `LicenseRef-`; else nothing (`NOASSERTION`). Expressions are checked with
//! the `spdx` crate against the SPDX licence list it carries, strictly: no
//! guessing from imprecise names ("BSD" says neither 2- nor 3-clause).

use crate::record::Distribution;

/// What an SBOM says of one distribution's licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Licence {
    /// A valid SPDX licence expression.
    Expression(String),
    /// Text that is not one, under its own `LicenseRef-` id.
    Text {
        /// `LicenseRef-<name>`.
        id: String,
        /// A short name: the text's first line.
        name: String,
        text: String,
    },
    /// The metadata says nothing usable.
    NoAssertion,
}

/// The SPDX licence list version the expressions are checked against.
pub fn list_version() -> &'static str {
    spdx::identifiers::VERSION
}

/// Trove classifiers that name exactly one SPDX licence. Classifiers that
/// do not ("BSD License", "Academic Free License (AFL)") are left out. The
/// Apache classifier names no version; every package that uses it today
/// means 2.0 (1.x predates PyPI), as scanners map it too.
const CLASSIFIERS: &[(&str, &str)] = &[
    ("License :: OSI Approved :: MIT License", "MIT"),
    (
        "License :: OSI Approved :: MIT No Attribution License (MIT-0)",
        "MIT-0",
    ),
    (
        "License :: OSI Approved :: Apache Software License",
        "Apache-2.0",
    ),
    ("License :: OSI Approved :: ISC License (ISCL)", "ISC"),
    (
        "License :: OSI Approved :: Python Software Foundation License",
        "PSF-2.0",
    ),
    (
        "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)",
        "MPL-2.0",
    ),
    (
        "License :: OSI Approved :: Mozilla Public License 1.1 (MPL 1.1)",
        "MPL-1.1",
    ),
    (
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
        "GPL-2.0-only",
    ),
    (
        "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)",
        "GPL-2.0-or-later",
    ),
    (
        "License :: OSI Approved :: GNU General Public License v3 (GPLv3)",
        "GPL-3.0-only",
    ),
    (
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "GPL-3.0-or-later",
    ),
    (
        "License :: OSI Approved :: GNU Lesser General Public License v2 (LGPLv2)",
        "LGPL-2.0-only",
    ),
    (
        "License :: OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)",
        "LGPL-2.0-or-later",
    ),
    (
        "License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)",
        "LGPL-3.0-only",
    ),
    (
        "License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)",
        "LGPL-3.0-or-later",
    ),
    (
        "License :: OSI Approved :: GNU Affero General Public License v3",
        "AGPL-3.0-only",
    ),
    (
        "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
        "AGPL-3.0-or-later",
    ),
    (
        "License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)",
        "EPL-2.0",
    ),
    (
        "License :: OSI Approved :: The Unlicense (Unlicense)",
        "Unlicense",
    ),
    ("License :: OSI Approved :: zlib/libpng License", "Zlib"),
    (
        "License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)",
        "BSL-1.0",
    ),
    (
        "License :: OSI Approved :: Universal Permissive License (UPL)",
        "UPL-1.0",
    ),
    (
        "License :: OSI Approved :: Historical Permission Notice and Disclaimer (HPND)",
        "HPND",
    ),
    (
        "License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication",
        "CC0-1.0",
    ),
];

/// The licence of distribution `key` (its normalized name) as an SBOM states it.
pub fn resolve(key: &str, d: &Distribution) -> Licence {
    if let Some(e) = d.license_expression.as_deref().and_then(expression) {
        return Licence::Expression(e);
    }
    if let Some(e) = d.license.as_deref().and_then(expression) {
        return Licence::Expression(e);
    }
    if let Some(e) = classifier(&d.classifiers) {
        return Licence::Expression(e.to_string());
    }
    // The text, where there is one: the free-text field, else an
    // expression the list does not know (a newer licence, a typo).
    let text = d
        .license
        .as_deref()
        .or(d.license_expression.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("UNKNOWN"));
    match text {
        Some(text) => Licence::Text {
            id: licence_ref(key),
            name: first_line(text),
            text: text.to_string(),
        },
        None => Licence::NoAssertion,
    }
}

/// `text` when it is a valid SPDX expression of listed licences (no
/// `LicenseRef-`, which would need its text alongside).
fn expression(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() || text.contains("LicenseRef-") || text.contains('\n') {
        return None;
    }
    spdx::Expression::parse_mode(text, spdx::ParseMode::STRICT)
        .ok()
        .map(|_| text.to_string())
}

/// The SPDX id of the one licence classifier, when there is exactly one and
/// it names one licence.
fn classifier(classifiers: &[String]) -> Option<&'static str> {
    let licences: Vec<&String> = classifiers
        .iter()
        .filter(|c| c.starts_with("License ::") && c.trim() != "License :: OSI Approved")
        .collect();
    match licences.as_slice() {
        [one] => CLASSIFIERS
            .iter()
            .find(|(c, _)| *c == one.trim())
            .map(|(_, id)| *id),
        _ => None,
    }
}

/// `LicenseRef-<name>`: the id's characters are letters, digits, `.` and `-`.
pub fn licence_ref(key: &str) -> String {
    let slug: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("LicenseRef-{slug}")
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(text);
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(expr: Option<&str>, license: Option<&str>, classifiers: &[&str]) -> Distribution {
        Distribution {
            name: "pkg".into(),
            version: "1".into(),
            license_expression: expr.map(str::to_string),
            license: license.map(str::to_string),
            classifiers: classifiers.iter().map(|c| c.to_string()).collect(),
            layer: "dependencies".into(),
            artifact: None,
        }
    }

    fn expr(s: &str) -> Licence {
        Licence::Expression(s.into())
    }

    /// The fixture venv's real metadata (apache-beam 2.77.0's closure).
    #[test]
    fn what_real_packages_declare() {
        // cryptography: PEP 639.
        assert_eq!(
            resolve(
                "cryptography",
                &dist(Some("Apache-2.0 OR BSD-3-Clause"), None, &[])
            ),
            expr("Apache-2.0 OR BSD-3-Clause")
        );
        assert_eq!(
            resolve("cffi", &dist(Some("MIT-0"), None, &[])),
            expr("MIT-0")
        );
        // requests: an SPDX id in the free-text field.
        let requests = dist(
            None,
            Some("Apache-2.0"),
            &["License :: OSI Approved :: Apache Software License"],
        );
        assert_eq!(resolve("requests", &requests), expr("Apache-2.0"));
        // proto-plus: "Apache 2.0" is not an expression; the classifier is.
        let proto = dist(
            None,
            Some("Apache 2.0"),
            &["License :: OSI Approved :: Apache Software License"],
        );
        assert_eq!(resolve("proto-plus", &proto), expr("Apache-2.0"));
        // certifi.
        let certifi = dist(
            None,
            Some("MPL-2.0"),
            &["License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)"],
        );
        assert_eq!(resolve("certifi", &certifi), expr("MPL-2.0"));
        // wheel: an empty field and a classifier.
        let wheel = dist(None, None, &["License :: OSI Approved :: MIT License"]);
        assert_eq!(resolve("wheel", &wheel), expr("MIT"));
    }

    #[test]
    fn text_that_is_no_expression_gets_a_licence_ref() {
        // numpy: its whole licence text, and the ambiguous BSD classifier.
        let numpy_text = "Copyright (c) 2005-2024, NumPy Developers.\nAll rights reserved.\n...";
        let numpy = dist(
            None,
            Some(numpy_text),
            &["License :: OSI Approved :: BSD License"],
        );
        assert_eq!(
            resolve("numpy", &numpy),
            Licence::Text {
                id: "LicenseRef-numpy".into(),
                name: "Copyright (c) 2005-2024, NumPy Developers.".into(),
                text: numpy_text.into()
            }
        );
        // python-dateutil: two classifiers say "dual", not which.
        let dateutil = dist(
            None,
            Some("Dual License"),
            &[
                "License :: OSI Approved :: BSD License",
                "License :: OSI Approved :: Apache Software License",
            ],
        );
        match resolve("python-dateutil", &dateutil) {
            Licence::Text { id, name, .. } => {
                assert_eq!(id, "LicenseRef-python-dateutil");
                assert_eq!(name, "Dual License");
            }
            other => panic!("{other:?}"),
        }
        // protobuf: "3-Clause BSD License" is prose.
        assert!(matches!(
            resolve("protobuf", &dist(None, Some("3-Clause BSD License"), &[])),
            Licence::Text { .. }
        ));
        // An expression of an id the list does not know keeps its text.
        match resolve("x", &dist(Some("Not-A-Licence-1.0"), None, &[])) {
            Licence::Text { text, .. } => assert_eq!(text, "Not-A-Licence-1.0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_usable_is_no_assertion() {
        assert_eq!(resolve("x", &dist(None, None, &[])), Licence::NoAssertion);
        assert_eq!(
            resolve("x", &dist(None, Some("UNKNOWN"), &[])),
            Licence::NoAssertion
        );
        assert_eq!(
            resolve("x", &dist(None, Some("  "), &[])),
            Licence::NoAssertion
        );
        assert_eq!(
            resolve(
                "x",
                &dist(None, None, &["License :: OSI Approved :: BSD License"])
            ),
            Licence::NoAssertion,
            "BSD names no one licence"
        );
        assert_eq!(
            resolve("x", &dist(None, None, &["License :: OSI Approved"])),
            Licence::NoAssertion
        );
    }

    #[test]
    fn imprecise_names_are_not_guessed_and_refs_are_valid_ids() {
        // The spdx crate's lax mode would read "gpl" as GPL-2.0-only.
        assert!(matches!(
            resolve("x", &dist(None, Some("gpl"), &[])),
            Licence::Text { .. }
        ));
        assert!(matches!(
            resolve("x", &dist(Some("LicenseRef-Mine"), None, &[])),
            Licence::Text { .. }
        ));
        assert_eq!(licence_ref("zope.interface"), "LicenseRef-zope.interface");
        assert_eq!(licence_ref("a_b c"), "LicenseRef-a-b-c");
        let long = "x".repeat(200);
        assert_eq!(first_line(&long).chars().count(), 80);
        assert!(list_version().starts_with("3."));
    }
}
