//! Handing a decrypted copy of a file to the system's opener (`xdg-open` on Linux, `open` on
//! macOS, or the `opener` of the config file): started detached with no terminal I/O, so it
//! can neither block nor scribble on the screen; a failure comes back as a sentence.
//!
//! Owns the process only; the copy itself (0600, removed when the session ends or the
//! message expires) is the manager's.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::sync::mpsc::UnboundedSender;

/// The opener of this system.
pub fn default_opener() -> &'static str {
    if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    }
}

/// Starts `opener` (a program and its own arguments, separated by spaces) on `path`; when it
/// cannot start or exits with an error, `failed` gets a sentence for the status line.
pub fn open(opener: &str, path: PathBuf, failed: UnboundedSender<String>) {
    let mut words = opener.split_whitespace();
    let Some(program) = words.next() else {
        let _ = failed.send("the opener in the config file is empty; set `opener`".into());
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(words)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let program = program.to_string();
    match cmd.spawn() {
        Err(e) => {
            let _ = failed.send(format!(
                "cannot start {program} to open the file ({e}); set `opener` in the config file, or save it with s"
            ));
        }
        // Waited for on a task of its own, so it leaves no zombie and never holds the screen.
        Ok(mut child) => {
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if status.success() => {}
                    Ok(status) => {
                        let _ = failed.send(format!(
                            "{program} could not open the file ({status}); save it with s instead"
                        ));
                    }
                    Err(e) => {
                        let _ = failed.send(format!("{program} failed: {e}"));
                    }
                }
            });
        }
    }
}
