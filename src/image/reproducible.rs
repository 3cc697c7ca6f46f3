//! Reproducible layers: the same inputs on the same base give the same image
//! id on any engine and storage driver, so racing CI runners push one digest
//! and a registry cache entry is the same whoever built it.
//!
//! What varied between builds of one key, and what fixes each:
//! - the time: every date in a layer (tar mtimes, the config's `created`)
//!   is clamped to one *epoch*, `SOURCE_DATE_EPOCH` when the user sets it,
//!   else the base image's `created` (see [`epoch`]);
//! - `.pyc` headers carrying source mtimes: the setup script exports
//!   `SOURCE_DATE_EPOCH` to the boot, so pip compiles hash-based `.pyc`
//!   (Python's `py_compile` rule); it is set in the script, never in the
//!   container's environment, so it does not reach the image's config;
//! - entry order following the storage driver's directory walk: the setup
//!   script sorts the list of changed paths (byte order) before `tar`;
//! - atime/ctime and owner names in tar headers: zeroed and emptied here
//!   ([`normalize_header`]); owners stay numeric.
//!
//! The key does not include the epoch: a layer found by key is reused
//! whatever epoch it was built with (the dependency layer must survive a
//! `SOURCE_DATE_EPOCH` that follows the commit time).

use crate::settings::SOURCE_DATE_EPOCH;

/// The epoch of a layer built on a base created at `base_created` (RFC
/// 3339, as the engine reports it): `source_date_epoch`
/// (`SOURCE_DATE_EPOCH`, see `crate::settings`) when set to a number, else
/// the base's `created`, else 0.
pub fn epoch(source_date_epoch: Option<&str>, base_created: Option<&str>) -> u64 {
    if let Some(s) = source_date_epoch {
        match s.trim().parse::<u64>() {
            Ok(n) => return n,
            Err(_) => tracing::warn!(
                "{SOURCE_DATE_EPOCH}={s:?} is not a number of seconds; using the base image's creation time"
            ),
        }
    }
    base_created
        .and_then(parse_rfc3339)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 date (`2024-05-01T12:00:00.123Z`,
/// `…+02:00`); fractions are dropped. `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let sep = |i: usize, c: &[u8]| s.as_bytes().get(i).is_some_and(|b| c.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Skip the fraction, then the zone: Z or ±hh:mm.
    let rest = s.get(19..)?;
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let offset = match rest {
        "Z" | "z" | "" => 0,
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (zh, zm) = zone.get(1..)?.split_once(':')?;
            sign * (zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm; the inverse of `image::rfc3339`'s).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One tar header made independent of when and by whom the file was
/// written: a file's mtime clamped to `epoch` (older dates are content: they
/// come from the base or from a package); a directory's set to `epoch` (its
/// mtime says when an entry last came or went, and a storage driver that
/// caches attributes, fuse-overlayfs, may show the base's or the new one);
/// GNU atime/ctime zeroed; owner and group names emptied (numeric ids stay).
pub fn normalize_header(header: &mut tar::Header, epoch: u64) {
    if header.entry_type().is_dir() || header.mtime().is_ok_and(|m| m > epoch) {
        header.set_mtime(epoch);
    }
    if let Some(gnu) = header.as_gnu_mut() {
        gnu.set_atime(0);
        gnu.set_ctime(0);
    }
    // Empty names cannot fail; a header without name fields (old v7) has none to clear.
    let _ = header.set_username("");
    let _ = header.set_groupname("");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_prefers_source_date_epoch_then_the_base() {
        assert_eq!(
            epoch(Some("1700000000"), Some("2001-01-01T00:00:00Z")),
            1_700_000_000
        );
        assert_eq!(epoch(None, Some("2001-09-09T01:46:40Z")), 1_000_000_000);
        assert_eq!(
            epoch(Some("yesterday"), Some("2001-09-09T01:46:40.5Z")),
            1_000_000_000,
            "a malformed SOURCE_DATE_EPOCH falls back to the base"
        );
        assert_eq!(epoch(None, None), 0);
        assert_eq!(epoch(None, Some("not a date")), 0);
    }

    #[test]
    fn rfc3339_as_engines_write_it() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-20T23:59:59.123456789Z"),
            Some(1_795_219_199)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T02:00:00+02:00"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2000-02-28T22:00:00-02:00"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(-62_135_596_800));
        for bad in [
            "",
            "2000-02-29",
            "2000-13-01T00:00:00Z",
            "2000/02/29T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_lose_times_after_the_epoch_and_owner_names() {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(2_000_000_000);
        h.set_uid(1000);
        h.set_username("alice").unwrap();
        h.set_groupname("staff").unwrap();
        h.as_gnu_mut().unwrap().set_atime(2_000_000_001);
        h.as_gnu_mut().unwrap().set_ctime(2_000_000_002);
        normalize_header(&mut h, 1_000_000_000);
        assert_eq!(h.mtime().unwrap(), 1_000_000_000, "clamped to the epoch");
        assert_eq!(h.as_gnu().unwrap().atime().unwrap(), 0);
        assert_eq!(h.as_gnu().unwrap().ctime().unwrap(), 0);
        assert_eq!(h.username().unwrap(), Some(""));
        assert_eq!(h.groupname().unwrap(), Some(""));
        assert_eq!(h.uid().unwrap(), 1000, "numeric owners stay");

        let mut old = tar::Header::new_gnu();
        old.set_mtime(500);
        normalize_header(&mut old, 1_000_000_000);
        assert_eq!(old.mtime().unwrap(), 500, "older dates are content");

        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mtime(500);
        normalize_header(&mut dir, 1_000_000_000);
        assert_eq!(
            dir.mtime().unwrap(),
            1_000_000_000,
            "a directory is dated by the epoch"
        );
    }
}
