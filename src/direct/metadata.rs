//! The small text formats of installed and to-be-installed distributions:
//! core metadata (`METADATA`, `PKG-INFO`: RFC 822 headers), `RECORD` (CSV),
//! `entry_points.txt` (INI), the wheel's `WHEEL` file and an egg-info's
//! `requires.txt`. Parsed as pip's own readers do (the stdlib's email, csv
//! and configparser modules); nothing here decides anything.

use std::collections::BTreeMap;

/// Core metadata headers, in order; repeated headers (`Requires-Dist`) keep every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub headers: Vec<(String, String)>,
}

impl Metadata {
    /// The headers of an RFC 822 message (the body after the first blank line is ignored).
    pub fn parse(text: &str) -> Metadata {
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push('\n');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Metadata { headers }
    }

    /// The first value of a header (case-insensitive name).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn name(&self) -> Option<&str> {
        self.get("Name")
    }

    pub fn version(&self) -> Option<&str> {
        self.get("Version")
    }

    pub fn requires_dist(&self) -> Vec<String> {
        self.get_all("Requires-Dist")
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn requires_python(&self) -> Option<&str> {
        self.get("Requires-Python")
    }
}

/// One row of a `RECORD`: path (as written, `/`-separated, relative to the
/// site directory), hash (`sha256=…` or empty) and size (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub path: String,
    pub hash: String,
    pub size: String,
}

/// A CSV file as Python's `csv` module reads it with the default dialect:
/// fields separated by commas, double-quoted fields may hold commas, quotes
/// (doubled) and newlines.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                started = true;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                started = true;
            }
            '\r' => {}
            '\n' => {
                if started || !field.is_empty() {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                started = false;
            }
            _ => {
                field.push(c);
                started = true;
            }
        }
    }
    if started || !field.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

pub fn parse_record(text: &str) -> Vec<RecordRow> {
    parse_csv(text)
        .into_iter()
        .filter_map(|mut r| {
            if r.is_empty() || r[0].is_empty() {
                return None;
            }
            r.resize(3, String::new());
            Some(RecordRow {
                path: r[0].clone(),
                hash: r[1].clone(),
                size: r[2].clone(),
            })
        })
        .collect()
}

/// A CSV field as Python's `csv.writer` writes it (quoted only when needed).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A `RECORD` as pip writes it: rows sorted, `\n` line ends.
pub fn write_record(rows: &[RecordRow]) -> String {
    let mut sorted: Vec<&RecordRow> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.path, &a.hash, &a.size).cmp(&(&b.path, &b.hash, &b.size)));
    let mut out = String::new();
    for r in sorted {
        out.push_str(&format!(
            "{},{},{}\n",
            csv_field(&r.path),
            csv_field(&r.hash),
            csv_field(&r.size)
        ));
    }
    out
}

/// `entry_points.txt`: section → (name, value) in order, as configparser
/// reads it (keys keep their case: pip's reader sets `optionxform = str`).
pub fn parse_entry_points(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            section = Some(t[1..t.len() - 1].trim().to_string());
            continue;
        }
        let Some(s) = &section else { continue };
        let split = t.find(['=', ':']);
        if let Some(i) = split {
            let (k, v) = (t[..i].trim(), t[i + 1..].trim());
            out.entry(s.clone())
                .or_default()
                .push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// An egg-info's `requires.txt` as `Requires-Dist` strings: the unnamed
/// section unconditionally, `[extra]` with `extra == "…"`, `[:marker]` and
/// `[extra:marker]` with the marker (setuptools' own conversion).
pub fn requires_txt(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            let inner = &t[1..t.len() - 1];
            let (extra, m) = match inner.split_once(':') {
                Some((e, m)) => (e.trim(), m.trim()),
                None => (inner.trim(), ""),
            };
            let mut parts = Vec::new();
            if !m.is_empty() {
                parts.push(format!("({m})"));
            }
            if !extra.is_empty() {
                parts.push(format!("extra == \"{extra}\""));
            }
            marker = (!parts.is_empty()).then(|| parts.join(" and "));
            continue;
        }
        match &marker {
            Some(m) => out.push(format!("{t} ; {m}")),
            None => out.push(t.to_string()),
        }
    }
    out
}

/// A wheel's `WHEEL` file: `Root-Is-Purelib` and the tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelInfo {
    pub root_is_purelib: bool,
    pub version: String,
}

pub fn parse_wheel_file(text: &str) -> WheelInfo {
    let m = Metadata::parse(text);
    WheelInfo {
        root_is_purelib: m
            .get("Root-Is-Purelib")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        version: m.get("Wheel-Version").unwrap_or("1.0").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_headers_repeat_and_continue() {
        let m = Metadata::parse(
            "Metadata-Version: 2.1\nName: python-slugify\nVersion: 8.0.4\nLicense: MIT\n  more license\nRequires-Dist: text-unidecode (>=1.3)\nRequires-Dist: Unidecode (>=1.1.1) ; extra == 'unidecode'\n\nBody: not a header\n",
        );
        assert_eq!(m.name(), Some("python-slugify"));
        assert_eq!(m.version(), Some("8.0.4"));
        assert_eq!(m.get("license"), Some("MIT\nmore license"));
        assert_eq!(m.requires_dist().len(), 2);
        assert_eq!(m.get("Body"), None);
    }

    #[test]
    fn record_rows_round_trip_with_quotes() {
        let text = "a/b.py,sha256=x,10\n\"odd,name.txt\",sha256=y,3\na.dist-info/RECORD,,\n";
        let rows = parse_record(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].path, "odd,name.txt");
        assert_eq!(rows[2].hash, "");
        let out = write_record(&rows);
        assert_eq!(
            out,
            "a.dist-info/RECORD,,\na/b.py,sha256=x,10\n\"odd,name.txt\",sha256=y,3\n"
        );
        assert_eq!(parse_record(&out).len(), 3);
    }

    #[test]
    fn entry_points_and_requires_txt() {
        let ep = parse_entry_points(
            "[console_scripts]\nslugify = slugify.__main__:main\nF2py=numpy.f2py:main\n\n[gui_scripts]\ng = m:f\n",
        );
        assert_eq!(
            ep["console_scripts"],
            vec![
                ("slugify".to_string(), "slugify.__main__:main".to_string()),
                ("F2py".to_string(), "numpy.f2py:main".to_string())
            ]
        );
        assert_eq!(ep["gui_scripts"].len(), 1);
        let r = requires_txt("six>=1.5\n\n[test]\npytest\n\n[:python_version < \"3.8\"]\nimportlib-metadata\n[ssl:sys_platform == \"win32\"]\nwincertstore\n");
        assert_eq!(
            r,
            vec![
                "six>=1.5".to_string(),
                "pytest ; extra == \"test\"".to_string(),
                "importlib-metadata ; (python_version < \"3.8\")".to_string(),
                "wincertstore ; (sys_platform == \"win32\") and extra == \"ssl\"".to_string(),
            ]
        );
        assert!(
            parse_wheel_file("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
                .root_is_purelib
        );
    }
}
