//! File paths as the composer takes them: `/attach`'s arguments (quotes or backslashes for
//! spaces, `~` for the home directory), Tab completion of a path, and whether a paste names
//! a file.
//!
//! The parsing and completion are pure (the directory listing comes in as an argument); the
//! few file-system reads (`list`, `existing_file`) are called by the terminal loop through
//! `files::resolve`, never by the app itself.

use std::path::{Path, PathBuf};

/// At most this many entries of a directory are considered for completion, so Tab in a huge
/// directory does not stall the screen.
const MAX_LISTED: usize = 5000;

/// Splits `args` into words: whitespace separates them, `"…"` or `'…'` keeps one whole, and
/// a backslash takes the next character as it is. An unterminated quote runs to the end.
pub fn words(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (_, '\\') if quote != Some('\'') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// `/attach`'s arguments: the path (first word) and the caption (the rest of the line as
/// typed, trimmed; None when empty).
pub fn attach_args(args: &str) -> Option<(String, Option<String>)> {
    let args = args.trim_start();
    let end = first_word_end(args);
    let path = words(&args[..end]).into_iter().next()?;
    let caption = args[end..].trim();
    Some((path, (!caption.is_empty()).then(|| caption.to_string())))
}

/// Where the first word of `s` ends (its quotes and escapes included).
fn first_word_end(s: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (escaped, quote, c) {
            (true, _, _) => escaped = false,
            (false, q, '\\') if q != Some('\'') => escaped = true,
            (false, Some(q), c) if c == q => quote = None,
            (false, None, '"' | '\'') => quote = Some(c),
            (false, None, c) if c.is_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

/// `~` or `~/…` with the home directory put in.
pub fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), dirs::home_dir()) {
        (Some(""), Some(home)) => home,
        (Some(rest), Some(home)) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

/// A path written so that `words` gives it back: spaces, quotes and backslashes escaped.
pub fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One entry of a directory: its name and whether it is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dir: bool,
}

/// What Tab does to a path being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCompletion {
    /// The completed path as typed (unescaped; `~` kept).
    pub path: String,
    /// Whether it names one file (so the caption can follow), not a directory or a prefix.
    pub done: bool,
    /// The names still possible when more than one is.
    pub choices: Vec<String>,
}

/// Completes `typed` (a partial path, unescaped) from `list`, which gives a directory's
/// entries: the longest common continuation, a `/` after a directory.
pub fn complete(typed: &str, list: impl Fn(&Path) -> Vec<Entry>) -> PathCompletion {
    let (dir, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let listed = if dir.is_empty() {
        PathBuf::from(".")
    } else {
        expand(dir)
    };
    let mut matching: Vec<Entry> = list(&listed)
        .into_iter()
        // Hidden files only when asked for with a leading dot.
        .filter(|e| {
            e.name.starts_with(prefix) && (prefix.starts_with('.') || !e.name.starts_with('.'))
        })
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    match matching.as_slice() {
        [] => PathCompletion {
            path: typed.to_string(),
            done: false,
            choices: Vec::new(),
        },
        [one] => PathCompletion {
            path: format!("{dir}{}{}", one.name, if one.dir { "/" } else { "" }),
            done: !one.dir,
            choices: Vec::new(),
        },
        many => {
            let names: Vec<&str> = many.iter().map(|e| e.name.as_str()).collect();
            PathCompletion {
                path: format!("{dir}{}", super::complete::common_prefix(&names)),
                done: false,
                choices: many
                    .iter()
                    .map(|e| format!("{}{}", e.name, if e.dir { "/" } else { "" }))
                    .collect(),
            }
        }
    }
}

/// The entries of `dir` (at most `MAX_LISTED`); none if it cannot be read.
pub fn list(dir: &Path) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .take(MAX_LISTED)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Follows symbolic links, so a link to a directory completes as one.
            let dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            Some(Entry { name, dir })
        })
        .collect()
}

/// Where `s` offers to save a file: `~/Downloads/` when it exists, else the current
/// directory.
pub fn default_save_dir() -> String {
    match dirs::home_dir() {
        Some(home) if home.join("Downloads").is_dir() => "~/Downloads/".into(),
        _ => "./".into(),
    }
}

/// If `pasted` is exactly the path of an existing regular file (surrounding whitespace,
/// quotes, a `file://` prefix and `~` allowed): that path and the file's size.
pub fn existing_file(pasted: &str) -> Option<(PathBuf, u64)> {
    let trimmed = pasted.trim();
    if trimmed.is_empty() || trimmed.contains('\n') {
        return None;
    }
    let unquoted = match words(trimmed).as_slice() {
        [one] => one.clone(),
        _ => trimmed.to_string(),
    };
    let plain = unquoted.strip_prefix("file://").unwrap_or(&unquoted);
    let path = expand(plain);
    let meta = std::fs::metadata(&path).ok()?;
    meta.is_file().then_some((path, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_keep_spaces_in_a_path() {
        assert_eq!(
            attach_args(r#""my photos/cat 1.png" look at him"#),
            Some(("my photos/cat 1.png".into(), Some("look at him".into())))
        );
        assert_eq!(
            attach_args(r"my\ photos/cat\ 1.png"),
            Some(("my photos/cat 1.png".into(), None))
        );
        assert_eq!(
            attach_args("'it''s.txt'  caption  "),
            Some(("its.txt".into(), Some("caption".into())))
        );
        assert_eq!(attach_args("   "), None);
        assert_eq!(words(escape(r#"a b"c\d'e"#).as_str()), vec![r#"a b"c\d'e"#]);
    }

    #[test]
    fn tilde_is_the_home_directory() {
        let home = dirs::home_dir().unwrap();
        assert_eq!(expand("~/x.png"), home.join("x.png"));
        assert_eq!(expand("~"), home);
        assert_eq!(expand("a/~b"), PathBuf::from("a/~b"));
    }

    fn listing(dir: &Path) -> Vec<Entry> {
        let e = |name: &str, dir: bool| Entry {
            name: name.into(),
            dir,
        };
        match dir.to_str() {
            Some(".") => vec![
                e("photos", true),
                e("notes.txt", false),
                e("notes.md", false),
                e(".hidden", false),
            ],
            Some("photos/") => vec![e("cat 1.png", false)],
            _ => Vec::new(),
        }
    }

    #[test]
    fn paths_complete_to_the_common_part_and_list_the_choices() {
        let c = complete("ph", listing);
        assert_eq!((c.path.as_str(), c.done), ("photos/", false));
        let c = complete("photos/c", listing);
        assert_eq!((c.path.as_str(), c.done), ("photos/cat 1.png", true));
        let c = complete("no", listing);
        assert_eq!(c.path, "notes.");
        assert_eq!(c.choices, vec!["notes.md", "notes.txt"]);
        assert!(!complete("", listing).choices.contains(&".hidden".into()));
        assert_eq!(complete(".h", listing).path, ".hidden");
        assert_eq!(complete("zz", listing).path, "zz");
    }

    #[test]
    fn a_paste_names_a_file_only_when_it_is_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a b.txt");
        std::fs::write(&file, b"12345").unwrap();
        let shown = file.display().to_string();
        assert_eq!(existing_file(&shown), Some((file.clone(), 5)));
        assert_eq!(
            existing_file(&format!(" '{shown}'\n")),
            Some((file.clone(), 5))
        );
        assert_eq!(existing_file(&format!("file://{shown}")), Some((file, 5)));
        assert_eq!(existing_file(&format!("see {shown}")), None);
        assert_eq!(existing_file(&dir.path().display().to_string()), None);
        assert_eq!(existing_file("hello"), None);
    }
}
