//! Composing in the user's editor: which editor, the draft file it edits, and what its exit
//! means.
//!
//! Owns the draft file: created 0600 in the profile's private directory (never in a shared
//! temporary directory), holding the composer's text, read back once the editor exits and
//! removed whatever happened (also when dropped on an error path). Runs nothing itself and
//! never touches the terminal: the terminal loop suspends the screen around the command this
//! module builds.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Drafts are named so a leftover from a crash is recognised and removed next time.
const PREFIX: &str = "compose-";
const SUFFIX: &str = ".txt";

#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    #[error(
        "cannot compose in an editor here: no private directory to keep the draft in; the message is unchanged"
    )]
    NoDir,
    #[error("cannot write the draft for the editor in {dir}: {source}; the message is unchanged")]
    Write { dir: String, source: std::io::Error },
    #[error("cannot start the editor {editor:?}: {source}; set $EDITOR to an editor's command")]
    Start {
        editor: String,
        source: std::io::Error,
    },
    #[error(
        "the editor {editor:?} was not found; set $EDITOR to an editor's command (the message is unchanged)"
    )]
    NotFound { editor: String },
    #[error("the editor {how} ({editor}); the message is unchanged")]
    Failed { editor: String, how: String },
    #[error("cannot read what the editor wrote: {0}; the message is unchanged")]
    Read(std::io::Error),
}

/// The editor to run: `$EDITOR`, then `$VISUAL`, then `vi`. Empty variables count as unset.
pub fn choose(editor: Option<String>, visual: Option<String>) -> String {
    [editor, visual]
        .into_iter()
        .flatten()
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// The editor named by this process's environment.
pub fn from_env() -> String {
    choose(std::env::var("EDITOR").ok(), std::env::var("VISUAL").ok())
}

/// A draft file for the editor; removed when dropped.
#[derive(Debug)]
pub struct Draft {
    path: PathBuf,
}

impl Draft {
    /// Writes `text` to a new 0600 file in `dir` (the profile directory, already 0700).
    pub fn create(dir: Option<&Path>, text: &str) -> Result<Draft, EditorError> {
        let dir = dir.ok_or(EditorError::NoDir)?;
        remove_leftovers(dir);
        let path = dir.join(format!("{PREFIX}{}{SUFFIX}", uuid::Uuid::new_v4()));
        let write_error = |source| EditorError::Write {
            dir: dir.display().to_string(),
            source,
        };
        let mut file = crate::private::file_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(write_error)?;
        let draft = Draft { path };
        file.write_all(text.as_bytes()).map_err(write_error)?;
        Ok(draft)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The command that runs `editor` on the draft. The editor is a shell command, as git
    /// and others read `$EDITOR`, so `code --wait` or `emacs -nw` work.
    pub fn command(&self, editor: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sotto-editor")
            .arg(&self.path);
        cmd
    }

    /// What the editor left, once it exited with `status`; the draft is removed either way.
    /// The newline editors add at the end is not part of the message.
    pub fn finish(self, editor: &str, status: ExitStatus) -> Result<String, EditorError> {
        check(editor, status)?;
        let text = std::fs::read_to_string(&self.path).map_err(EditorError::Read)?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Turns the editor's exit status into an error the status line can show.
fn check(editor: &str, status: ExitStatus) -> Result<(), EditorError> {
    let editor = editor.to_string();
    match status.code() {
        Some(0) => Ok(()),
        // The shell's "command not found" and "not executable".
        Some(127 | 126) => Err(EditorError::NotFound { editor }),
        Some(n) => Err(EditorError::Failed {
            editor,
            how: format!("exited with status {n}"),
        }),
        None => Err(EditorError::Failed {
            editor,
            how: "was stopped by a signal".into(),
        }),
    }
}

/// Drafts a crash left behind: they hold message text and are nobody's now.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> String {
        let path = dir.join("editor.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[test]
    fn the_editor_is_editor_then_visual_then_vi() {
        assert_eq!(choose(Some("nano".into()), Some("emacs".into())), "nano");
        assert_eq!(choose(Some(" ".into()), Some("emacs".into())), "emacs");
        assert_eq!(choose(None, None), "vi");
    }

    #[test]
    fn the_draft_is_private_seeded_read_back_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let seen = tmp.path().join("seen");
        let editor = script(
            tmp.path(),
            &format!(
                "stat -c %a \"$1\" > '{s}'; cat \"$1\" >> '{s}'; printf 'new text\\n  indented\\n' > \"$1\"",
                s = seen.display()
            ),
        );
        let leftover = tmp.path().join("compose-old.txt");
        std::fs::write(&leftover, "from a crash").unwrap();
        let draft = Draft::create(Some(tmp.path()), "seed").unwrap();
        assert!(!leftover.exists());
        let path = draft.path().to_path_buf();
        let status = draft.command(&editor).status().unwrap();
        let text = draft.finish(&editor, status).unwrap();
        assert_eq!(text, "new text\n  indented");
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "600\nseed");
        assert!(!path.exists(), "the draft is removed");
    }

    #[test]
    fn a_failing_or_missing_editor_is_explained_and_the_draft_still_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let failing = script(tmp.path(), "exit 3");
        let draft = Draft::create(Some(tmp.path()), "x").unwrap();
        let path = draft.path().to_path_buf();
        let status = draft.command(&failing).status().unwrap();
        let err = draft.finish(&failing, status).unwrap_err().to_string();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(!path.exists());

        let missing = "/nonexistent/editor";
        let draft = Draft::create(Some(tmp.path()), "x").unwrap();
        let status = draft.command(missing).status().unwrap();
        let err = draft.finish(missing, status).unwrap_err().to_string();
        assert!(
            err.contains("not found") && err.contains("$EDITOR"),
            "{err}"
        );
        assert!(matches!(Draft::create(None, "x"), Err(EditorError::NoDir)));
    }
}
