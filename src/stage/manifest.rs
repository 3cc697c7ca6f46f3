//! Beam's `artifacts_info.json`, read and written byte for byte as Beam does.
//!
//! The manifest is the contract with the boot program (`--artifacts <manifest>`)
//! and with Beam's own staging code, so both directions have to match what
//! Beam's Python writes: a JSON array whose elements are *strings*, each the
//! proto3-JSON of an `ArtifactInformation` whose `typePayload` is a base64
//! `ArtifactFilePayload` protobuf. The protobuf has two string fields, which is
//! too little to justify a protobuf dependency, so the wire format is hand-written.

use std::path::Path;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const FILE_TYPE_URN: &str = "beam:artifact:type:file:v1";

/// One `ArtifactInformation` of type file: the staged name and, when the writer
/// recorded it, the sha256 of the bytes (empty when absent, as in proto3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub path: String,
    pub sha256: String,
}

/// `ArtifactFilePayload` field tags: field number << 3 | wire type 2 (length-delimited).
const TAG_PATH: u8 = 0x0a;
const TAG_SHA256: u8 = 0x12;

/// Protobuf's JSON mapping emits standard padded base64 but parsers accept the
/// URL-safe alphabet and missing padding; other writers of this file may do either.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Render entries exactly as Beam's `SdkContainerImageBuilder` does:
/// `'[\n' + ',\n'.join(json.dumps(MessageToJson(info)) ...) + '\n]'`.
pub fn encode(entries: &[ManifestEntry]) -> String {
    let infos: Vec<String> = entries
        .iter()
        .map(|entry| {
            let payload = STANDARD.encode(encode_payload(entry));
            // MessageToJson's layout: 2-space indent, fields in field-number order.
            let info = format!(
                "{{\n  \"typeUrn\": \"{FILE_TYPE_URN}\",\n  \"typePayload\": \"{payload}\"\n}}"
            );
            // `json.dumps` of that string; it is pure ASCII, where serde_json and
            // Python escape identically.
            Value::String(info).to_string()
        })
        .collect();
    format!("[\n{}\n]", infos.join(",\n"))
}

/// Parse a manifest. `manifest` is only used to name the file in errors.
/// Entry indexes in errors are 0-based, like the JSON array.
pub fn decode(text: &str, manifest: &Path) -> Result<Vec<ManifestEntry>> {
    let invalid = |reason: String| Error::ManifestInvalid {
        path: manifest.to_path_buf(),
        reason,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("it is not JSON: {e}")))?;
    let items = value.as_array().ok_or_else(|| {
        invalid(format!(
            "expected a JSON array of strings, found {}",
            json_kind(&value)
        ))
    })?;

    let mut entries = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let text = item.as_str().ok_or_else(|| {
            invalid(format!(
                "entry {index} is {}, expected a string holding ArtifactInformation JSON",
                json_kind(item)
            ))
        })?;
        let info: Value = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "entry {index} is not ArtifactInformation JSON: {e}"
            ))
        })?;
        let info = info.as_object().ok_or_else(|| {
            invalid(format!(
                "entry {index} is {}, expected a JSON object",
                json_kind(&info)
            ))
        })?;

        // proto3 JSON: an absent or null field is the default, the empty string.
        let urn = match field(info, "typeUrn", "type_urn") {
            None => "",
            Some(Value::String(urn)) => urn.as_str(),
            Some(other) => {
                return Err(invalid(format!(
                    "entry {index}: typeUrn is {}, expected a string",
                    json_kind(other)
                )))
            }
        };
        if urn != FILE_TYPE_URN {
            return Err(Error::WrongTypeUrn {
                manifest: manifest.to_path_buf(),
                index,
                urn: urn.to_string(),
            });
        }

        let payload = match field(info, "typePayload", "type_payload") {
            None => return Err(invalid(format!("entry {index} has no typePayload"))),
            Some(Value::String(payload)) => payload,
            Some(other) => {
                return Err(invalid(format!(
                    "entry {index}: typePayload is {}, expected a base64 string",
                    json_kind(other)
                )))
            }
        };
        let bytes = STANDARD_LENIENT
            .decode(payload)
            .or_else(|_| URL_SAFE_LENIENT.decode(payload))
            .map_err(|e| invalid(format!("entry {index}: typePayload is not base64: {e}")))?;
        let entry = decode_payload(&bytes).map_err(|why| {
            invalid(format!(
                "entry {index}: typePayload is not an ArtifactFilePayload: {why}"
            ))
        })?;
        if entry.path.is_empty() {
            return Err(invalid(format!("entry {index} has an empty path")));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// A proto3-JSON field under its JSON name or its original (snake_case) name;
/// null counts as absent, as the JSON mapping says.
fn field<'a>(info: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    info.get(camel)
        .or_else(|| info.get(snake))
        .filter(|v| !v.is_null())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn encode_payload(entry: &ManifestEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.path.len() + entry.sha256.len() + 8);
    // proto3 leaves empty strings off the wire; fields go in number order.
    for (tag, value) in [(TAG_PATH, &entry.path), (TAG_SHA256, &entry.sha256)] {
        if !value.is_empty() {
            out.push(tag);
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(value.as_bytes());
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decode an `ArtifactFilePayload`, skipping fields a newer Beam may add.
fn decode_payload(bytes: &[u8]) -> std::result::Result<ManifestEntry, String> {
    let mut wire = Wire { bytes, pos: 0 };
    let mut entry = ManifestEntry {
        path: String::new(),
        sha256: String::new(),
    };
    while !wire.at_end() {
        let (number, wire_type) = wire.tag()?;
        match (number, wire_type) {
            // proto3: when a singular field repeats, the last value wins.
            (1, 2) => entry.path = wire.string("path")?,
            (2, 2) => entry.sha256 = wire.string("sha256")?,
            (1 | 2, other) => {
                return Err(format!(
                    "field {number} has wire type {other}, expected 2 (string)"
                ))
            }
            _ => wire.skip(number, wire_type, 0)?,
        }
    }
    Ok(entry)
}

/// A cursor over protobuf wire format that never reads past the end.
struct Wire<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Groups nest; bound the recursion so hostile input cannot overflow the stack.
const MAX_GROUP_DEPTH: usize = 64;

impl Wire<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or("truncated varint".to_string())?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn tag(&mut self) -> std::result::Result<(u64, u8), String> {
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        Ok((number, (tag & 7) as u8))
    }

    fn take(&mut self, len: u64) -> std::result::Result<&[u8], String> {
        let remaining = self.bytes.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= remaining)
            .ok_or_else(|| format!("truncated: {len} bytes announced, {remaining} left"))?;
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn string(&mut self, name: &str) -> std::result::Result<String, String> {
        let len = self.varint()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{name} is not UTF-8"))
    }

    fn skip(
        &mut self,
        number: u64,
        wire_type: u8,
        depth: usize,
    ) -> std::result::Result<(), String> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => {
                let len = self.varint()?;
                self.take(len).map(|_| ())
            }
            3 => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err("groups nested too deeply".into());
                }
                loop {
                    if self.at_end() {
                        return Err(format!("truncated: group {number} is not closed"));
                    }
                    let (inner, inner_type) = self.tag()?;
                    if inner_type == 4 {
                        if inner != number {
                            return Err(format!(
                                "group {number} closed by end-group of field {inner}"
                            ));
                        }
                        return Ok(());
                    }
                    self.skip(inner, inner_type, depth + 1)?;
                }
            }
            4 => Err(format!("unexpected end-group for field {number}")),
            5 => self.take(4).map(|_| ()),
            other => Err(format!("invalid wire type {other} for field {number}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, sha256: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            sha256: sha256.into(),
        }
    }

    fn manifest() -> &'static Path {
        Path::new("/ctx/artifacts_info.json")
    }

    /// Wrap one ArtifactInformation JSON object as Beam does (a JSON string in an array).
    fn wrap(info: &str) -> String {
        format!("[{}]", Value::String(info.to_string()))
    }

    fn reason(err: Error) -> String {
        match err {
            Error::ManifestInvalid { reason, .. } => reason,
            other => panic!("expected ManifestInvalid, got {other:?}"),
        }
    }

    #[test]
    fn encode_matches_beam_byte_for_byte() {
        // What Beam 2.x writes for a context holding only requirements.txt.
        let beam = r#"[
"{\n  \"typeUrn\": \"beam:artifact:type:file:v1\",\n  \"typePayload\": \"ChByZXF1aXJlbWVudHMudHh0\"\n}"
]"#;
        assert_eq!(encode(&[entry("requirements.txt", "")]), beam);
    }

    #[test]
    fn encode_joins_entries_like_beam() {
        let text = encode(&[entry("a.whl", ""), entry("b.whl", "")]);
        assert!(text.starts_with("[\n\"{"));
        assert!(text.contains("}\",\n\"{"));
        assert!(text.ends_with("}\"\n]"));
    }

    #[test]
    fn payload_is_path_then_sha256() {
        let bytes = encode_payload(&entry("requirements.txt", "ab"));
        let mut expected = vec![0x0a, 16];
        expected.extend_from_slice(b"requirements.txt");
        expected.extend_from_slice(&[0x12, 2, b'a', b'b']);
        assert_eq!(bytes, expected);
        assert_eq!(
            STANDARD.encode(encode_payload(&entry("requirements.txt", ""))),
            "ChByZXF1aXJlbWVudHMudHh0"
        );
    }

    #[test]
    fn long_strings_use_multibyte_varints() {
        let long = "x".repeat(300);
        let e = entry(&long, &"f".repeat(64));
        let bytes = encode_payload(&e);
        assert_eq!(&bytes[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(decode_payload(&bytes).unwrap(), e);
    }

    #[test]
    fn round_trip_with_sha256() {
        let entries = vec![
            entry("requirements.txt", &"0".repeat(64)),
            entry(
                "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                &"a1".repeat(32),
            ),
            entry("workflow.tar.gz", ""),
        ];
        assert_eq!(decode(&encode(&entries), manifest()).unwrap(), entries);
    }

    #[test]
    fn empty_array_decodes_to_no_entries() {
        assert_eq!(decode("[]", manifest()).unwrap(), vec![]);
        assert_eq!(decode(&encode(&[]), manifest()).unwrap(), vec![]);
    }

    #[test]
    fn accepts_snake_case_and_role_fields() {
        let info = r#"{"type_urn": "beam:artifact:type:file:v1", "type_payload": "ChByZXF1aXJlbWVudHMudHh0", "role_urn": "beam:artifact:role:staging_to:v1", "role_payload": "CgR4LnR4dA=="}"#;
        assert_eq!(
            decode(&wrap(info), manifest()).unwrap(),
            vec![entry("requirements.txt", "")]
        );
        let info = r#"{"typeUrn": "beam:artifact:type:file:v1", "typePayload": "ChByZXF1aXJlbWVudHMudHh0", "roleUrn": "beam:artifact:role:staging_to:v1", "rolePayload": "CgR4Lnh0"}"#;
        assert_eq!(decode(&wrap(info), manifest()).unwrap().len(), 1);
    }

    #[test]
    fn accepts_url_safe_and_unpadded_base64() {
        // Payloads for paths "???" ("CgM/Pz8=") and "ab~~" ("CgRhYn5+") use the
        // two characters where the alphabets differ.
        for (payload, path) in [
            ("CgM/Pz8=", "???"),
            ("CgM/Pz8", "???"),
            ("CgM_Pz8=", "???"),
            ("CgM_Pz8", "???"),
            ("CgRhYn5+", "ab~~"),
            ("CgRhYn5-", "ab~~"),
        ] {
            let info = format!(r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": "{payload}"}}"#);
            assert_eq!(
                decode(&wrap(&info), manifest()).unwrap(),
                vec![entry(path, "")],
                "{payload}"
            );
        }
    }

    #[test]
    fn skips_unknown_fields_of_every_wire_type() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x18, 0x96, 0x01]); // field 3 varint
        bytes.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4 fixed64
        bytes.extend_from_slice(&[0x0a, 1, b'x']); // path "x"
        bytes.extend_from_slice(&[0x2a, 2, 0xff, 0xfe]); // field 5 bytes
        bytes.extend_from_slice(&[0x35, 1, 2, 3, 4]); // field 6 fixed32
        bytes.extend_from_slice(&[0x3b, 0x08, 0x01, 0x3c]); // field 7 group holding a varint
        bytes.extend_from_slice(&[0x12, 1, b'y']); // sha256 "y"
        assert_eq!(decode_payload(&bytes).unwrap(), entry("x", "y"));
    }

    #[test]
    fn rejects_bad_protobuf() {
        for (bytes, why) in [
            (&[0x0a, 5, b'a'][..], "truncated"),
            (&[0x0a][..], "truncated varint"),
            (&[0x0a, 0x80][..], "truncated varint"),
            (&[0x08, 1][..], "wire type 0"),
            (&[0x0a, 2, 0xff, 0xfe][..], "not UTF-8"),
            (&[0x1b, 0x08, 1][..], "not closed"),
            (&[0x1c][..], "end-group"),
            (&[0x1e][..], "invalid wire type 6"),
            (&[0x02, 0][..], "field number 0"),
            (&[0x21, 1, 2][..], "truncated"),
            (
                &[
                    0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ][..],
                "varint",
            ),
        ] {
            let err = decode_payload(bytes).unwrap_err();
            assert!(err.contains(why), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not JSON"),
            (
                "{}".into(),
                "expected a JSON array of strings, found an object",
            ),
            ("[1]".into(), "entry 0 is a number"),
            (r#"[{"typeUrn": "x"}]"#.into(), "entry 0 is an object"),
            (
                r#"["not json"]"#.into(),
                "entry 0 is not ArtifactInformation JSON",
            ),
            (
                r#"["[1, 2]"]"#.into(),
                "entry 0 is an array, expected a JSON object",
            ),
            (
                wrap(&format!(r#"{{"typeUrn": "{FILE_TYPE_URN}"}}"#)),
                "entry 0 has no typePayload",
            ),
            (
                wrap(&format!(
                    r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": 3}}"#
                )),
                "typePayload is a number",
            ),
            (
                wrap(&format!(
                    r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": "!!!"}}"#
                )),
                "not base64",
            ),
            (
                wrap(&format!(
                    r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": "CgVh"}}"#
                )),
                "not an ArtifactFilePayload: truncated",
            ),
            (
                wrap(&format!(
                    r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": ""}}"#
                )),
                "entry 0 has an empty path",
            ),
            (
                wrap(&format!(
                    r#"{{"typeUrn": "{FILE_TYPE_URN}", "typePayload": "EgJhYg=="}}"#
                )),
                "entry 0 has an empty path",
            ),
            (
                wrap(r#"{"typeUrn": 7, "typePayload": "CgF4"}"#),
                "typeUrn is a number",
            ),
        ];
        for (text, why) in cases {
            let reason = reason(decode(&text, manifest()).unwrap_err());
            assert!(reason.contains(why), "{text}: {reason}");
        }
    }

    #[test]
    fn error_names_the_failing_entry() {
        let mut text = encode(&[entry("a", ""), entry("b", "")]);
        text = text.replacen(']', ", 5]", 1);
        let reason = reason(decode(&text, manifest()).unwrap_err());
        assert!(reason.contains("entry 2 is a number"), "{reason}");
    }

    #[test]
    fn wrong_type_urn_is_its_own_error() {
        let info = r#"{"typeUrn": "beam:artifact:type:url:v1", "typePayload": "CgF4"}"#;
        match decode(&wrap(info), manifest()).unwrap_err() {
            Error::WrongTypeUrn {
                index,
                urn,
                manifest: m,
            } => {
                assert_eq!(index, 0);
                assert_eq!(urn, "beam:artifact:type:url:v1");
                assert_eq!(m, manifest());
            }
            other => panic!("{other:?}"),
        }
        // An omitted URN is proto3's empty default, still the wrong type.
        let info = r#"{"typePayload": "CgF4"}"#;
        assert!(matches!(
            decode(&wrap(info), manifest()).unwrap_err(),
            Error::WrongTypeUrn { urn, .. } if urn.is_empty()
        ));
    }

    #[test]
    fn tolerates_a_byte_order_mark() {
        let text = format!("\u{feff}{}", encode(&[entry("a", "")]));
        assert_eq!(decode(&text, manifest()).unwrap(), vec![entry("a", "")]);
    }
}
