//! The last good copy of each subscription, under `[lists] state_dir`: the downloaded bytes
//! (`<list>.txt`, read like a `domains_file`) and what is known about them (`<list>.meta.toml`:
//! the URL, the validators for a conditional GET, when it was last confirmed current). Both are
//! written to a temporary file and renamed over, so a crash or a full disk never leaves a half
//! copy in force.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// The URL the copy came from: validators of another URL must not be sent.
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds when the server last gave (or confirmed, with 304) this copy.
    pub checked_unix: u64,
    /// Lower-case hex SHA-256 of the copy.
    pub sha256: String,
}

impl Meta {
    pub fn checked_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.checked_unix)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The stored copy of list `name`. The file name comes from the list's name (itself a file
/// name), never from the URL; bytes outside `[A-Za-z0-9_.-]` are %-escaped so no name can
/// reach another folder or a hidden file, and two names never share a file.
pub fn copy_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{}.txt", file_stem(name)))
}

fn meta_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{}.meta.toml", file_stem(name)))
}

fn file_stem(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stored copy of `name`, if one exists: a subscription not fetched yet has none, and the
/// list is loaded without it (startup never waits for the network).
pub fn existing_copy(state_dir: &Path, name: &str) -> Option<PathBuf> {
    let path = copy_path(state_dir, name);
    path.is_file().then_some(path)
}

/// What is known of the stored copy; `None` without a copy, or with an unreadable record (the
/// next fetch is then a plain GET, which is always safe).
pub fn load_meta(state_dir: &Path, name: &str) -> Option<Meta> {
    existing_copy(state_dir, name)?;
    let text = std::fs::read_to_string(meta_path(state_dir, name)).ok()?;
    toml::from_str(&text).ok()
}

/// Replaces the stored copy with `bytes` and records `meta`.
pub fn save(state_dir: &Path, name: &str, bytes: &[u8], meta: &Meta) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    write_atomically(&copy_path(state_dir, name), bytes)?;
    save_meta(state_dir, name, meta)
}

/// Records `meta` alone (a 304 confirmed the copy).
pub fn save_meta(state_dir: &Path, name: &str, meta: &Meta) -> std::io::Result<()> {
    let text = toml::to_string(meta).map_err(std::io::Error::other)?;
    write_atomically(&meta_path(state_dir, name), text.as_bytes())
}

/// Copies the stored copies (and records) of `names` from `from` to `to` where `to` holds none:
/// a reload that moves `[lists] state_dir` keeps each subscription's last good copy in force
/// instead of dropping its names until the next download succeeds. How many were copied.
pub fn carry_over<'a>(
    from: &Path,
    to: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> std::io::Result<usize> {
    let mut copied = 0;
    for name in names {
        let Some(copy) = existing_copy(from, name) else {
            continue;
        };
        if existing_copy(to, name).is_some() {
            continue;
        }
        std::fs::create_dir_all(to)?;
        // the record first: a copy without one is only fetched again, never wrong
        if let Ok(meta) = std::fs::read(meta_path(from, name)) {
            write_atomically(&meta_path(to, name), &meta)?;
        }
        write_atomically(&copy_path(to, name), &std::fs::read(copy)?)?;
        copied += 1;
    }
    Ok(copied)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    // hidden, and not `*.txt`: never mistaken for a list or a copy
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_list_name_and_stay_in_the_folder() {
        let dir = Path::new("/state");
        assert_eq!(copy_path(dir, "ads"), Path::new("/state/ads.txt"));
        assert_eq!(
            copy_path(dir, "my.ads-v2_x"),
            Path::new("/state/my.ads-v2_x.txt")
        );
        assert_eq!(copy_path(dir, "../etc"), Path::new("/state/%2E.%2Fetc.txt"));
        assert_eq!(copy_path(dir, "a b"), Path::new("/state/a%20b.txt"));
        assert_ne!(copy_path(dir, "a b"), copy_path(dir, "a_b"));
        assert_eq!(copy_path(dir, "ä"), Path::new("/state/%C3%A4.txt"));
    }

    #[test]
    fn carry_over_copies_what_the_new_folder_lacks() {
        let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let meta = Meta {
            url: "https://example.org/a.txt".into(),
            sha256: "00".into(),
            ..Meta::default()
        };
        save(old.path(), "a", b"a.example\n", &meta).unwrap();
        save(old.path(), "b", b"b.example\n", &meta).unwrap();
        save(new.path(), "b", b"newer.example\n", &meta).unwrap();
        let to = new.path().join("sub");
        let copied = carry_over(old.path(), &to, ["a", "missing"]).unwrap();
        assert_eq!(copied, 1);
        assert_eq!(std::fs::read(copy_path(&to, "a")).unwrap(), b"a.example\n");
        assert_eq!(load_meta(&to, "a"), Some(meta));
        // a copy the new folder has is its own
        assert_eq!(carry_over(old.path(), new.path(), ["b"]).unwrap(), 0);
        assert_eq!(
            std::fs::read(copy_path(new.path(), "b")).unwrap(),
            b"newer.example\n"
        );
    }

    #[test]
    fn a_saved_copy_and_its_record_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("lists");
        assert_eq!(existing_copy(&state, "ads"), None);
        assert_eq!(load_meta(&state, "ads"), None);
        let meta = Meta {
            url: "http://127.0.0.1/x".into(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            checked_unix: 1_700_000_000,
            sha256: "ab".into(),
        };
        save(&state, "ads", b"a.example\n", &meta).unwrap();
        assert_eq!(
            std::fs::read(existing_copy(&state, "ads").unwrap()).unwrap(),
            b"a.example\n"
        );
        assert_eq!(load_meta(&state, "ads"), Some(meta.clone()));
        let files: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:?}");
        // a garbled record means a plain GET next time, not an error
        std::fs::write(state.join("ads.meta.toml"), "not toml [").unwrap();
        assert_eq!(load_meta(&state, "ads"), None);
    }
}
