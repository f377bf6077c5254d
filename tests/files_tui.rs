//! Files in the chat screen without a terminal: file lines in every state drawn on ratatui's
//! TestBackend (progress with rate and time left over the app's injected clock, a finished
//! file with its caption, one waiting at the relay, a failed one, a half-block picture), and
//! the keys and commands around them through the key map and the pure app (download, open,
//! save, `/attach`, Tab completion of a path, a pasted path).

mod common;

use std::sync::Arc;

use common::tui::{app_with_bob, ctrl, key, msg, press, rows, screen, typing};
use crossterm::event::KeyCode;
use sotto::client::attachment::{Attachment, AttachmentState};
use sotto::client::manager::{Command, Event};
use sotto::client::store::{Expired, Message};
use sotto::tui::app::{Action, App};
use sotto::tui::composer::Edit;
use sotto::tui::files;
use sotto::tui::keys::KeyMap;

const MIB: u64 = 1024 * 1024;

fn file(name: &str, mime: &str, size: u64, state: AttachmentState) -> Attachment {
    Attachment {
        name: name.into(),
        mime: mime.into(),
        size,
        state,
    }
}

fn file_msg(seq: i64, outgoing: bool, caption: &str, a: Attachment) -> Message {
    let mut m = msg(seq, "bob", false, outgoing, caption);
    m.attachment = Some(a);
    m
}

/// bob's thread holding `messages`, the clock at their sending time.
fn thread(messages: Vec<Message>) -> App {
    let mut app = app_with_bob();
    app.now_ms = messages[0].sent_at;
    let cmds = app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: Vec::new(),
        complete: true,
    });
    assert!(cmds.is_empty());
    app.thread.messages = messages;
    app.status = None;
    app
}

/// The screen's text; a wide character's second cell (blank in the buffer) left out after 📎.
fn shown(backend: &ratatui::backend::TestBackend) -> String {
    rows(backend).join("\n").replace("📎  ", "📎 ")
}

fn text(app: &App) -> String {
    shown(&screen(app, 80, 24))
}

fn progress(app: &mut App, id: &str, at_ms: u64, state: AttachmentState) {
    app.now_ms = at_ms;
    let attachment = file("holiday.mp4", "video/mp4", 12 * MIB, state);
    app.on_event(Event::Attachment {
        id: id.into(),
        attachment,
    });
}

#[test]
fn an_upload_shows_bytes_rate_and_time_left_from_its_progress_reports() {
    let up = |done| AttachmentState::Uploading { done };
    let mut app = thread(vec![file_msg(
        1,
        true,
        "",
        file("holiday.mp4", "video/mp4", 12 * MIB, up(0)),
    )]);
    let t0 = app.now_ms;
    progress(&mut app, "m1", t0, up(0));
    // One report gives no rate yet.
    let first = text(&app);
    assert!(
        first.contains("0 B / 12.0 MiB") && !first.contains("left"),
        "{first}"
    );
    progress(&mut app, "m1", t0 + 1000, up(MIB));
    progress(&mut app, "m1", t0 + 2000, up(2 * MIB));
    let shown = text(&app);
    assert!(shown.contains("📎 holiday.mp4 · 12.0 MiB"), "{shown}");
    // At 80 columns beside the contact list the rate goes on a row of its own.
    assert!(shown.contains("2.0 MiB / 12.0 MiB"), "{shown}");
    assert!(shown.contains("1.0 MiB/s · 10s left"), "{shown}");
    insta::assert_snapshot!("file_uploading_80x24", screen(&app, 80, 24));
    // The rate is smoothed: a burst moves it part of the way.
    progress(&mut app, "m1", t0 + 3000, up(5 * MIB));
    let shown = text(&app);
    assert!(shown.contains("5.0 MiB / 12.0 MiB"), "{shown}");
    assert!(shown.contains("1.6 MiB/s · 5s left"), "{shown}");
    // Done: no bar left.
    progress(&mut app, "m1", t0 + 4000, AttachmentState::Ready);
    assert!(!text(&app).contains("MiB/s"));
}

#[test]
fn a_finished_file_shows_its_caption_and_when_selected_its_keys() {
    let mut app = thread(vec![file_msg(
        1,
        false,
        "the minutes of Tuesday",
        file(
            "minutes.pdf",
            "application/pdf",
            340 * 1024,
            AttachmentState::Ready,
        ),
    )]);
    let shown = text(&app);
    assert!(shown.contains("bob: 📎 minutes.pdf · 340.0 KiB"), "{shown}");
    assert!(shown.contains("the minutes of Tuesday"), "{shown}");
    assert!(!shown.contains("o open"), "{shown}");
    insta::assert_snapshot!("file_finished_80x24", screen(&app, 80, 24));
    press(&mut app, [key(KeyCode::Up)]);
    assert!(text(&app).contains("o open · s save"));
}

#[test]
fn a_remote_and_a_failed_file_say_what_enter_does() {
    let app = thread(vec![file_msg(
        1,
        false,
        "",
        file(
            "talk.mkv",
            "video/x-matroska",
            300 * MIB,
            AttachmentState::Remote,
        ),
    )]);
    assert!(text(&app).contains("Enter to download (300.0 MiB)"));
    insta::assert_snapshot!("file_remote_80x24", screen(&app, 80, 24));
    let failed = AttachmentState::Failed {
        error: "the file did not match its digest; ask bob to send it again".into(),
    };
    let app = thread(vec![file_msg(
        1,
        false,
        "",
        file("talk.mkv", "video/x-matroska", 300 * MIB, failed),
    )]);
    let shown = text(&app);
    assert!(
        shown.contains("✗ the file did not match its digest"),
        "{shown}"
    );
    assert!(shown.contains("Enter to retry"), "{shown}");
    insta::assert_snapshot!("file_failed_80x24", screen(&app, 80, 24));
}

#[test]
fn enter_downloads_a_remote_or_failed_file_and_still_replies_to_a_text() {
    let mut app = thread(vec![
        msg(1, "bob", false, false, "look at this"),
        file_msg(
            2,
            false,
            "",
            file(
                "talk.mkv",
                "video/x-matroska",
                300 * MIB,
                AttachmentState::Remote,
            ),
        ),
    ]);
    let cmds = press(&mut app, [key(KeyCode::Up), key(KeyCode::Enter)]);
    assert!(
        matches!(&cmds[..], [Command::Download { id, .. }] if id == "m2"),
        "{cmds:?}"
    );
    assert_eq!(app.selected_message(), None);
    // Failed: Enter tries again the same way.
    app.thread.messages[1].attachment.as_mut().unwrap().state = AttachmentState::Failed {
        error: "the relay went away".into(),
    };
    let cmds = press(&mut app, [key(KeyCode::Up), key(KeyCode::Enter)]);
    assert!(matches!(&cmds[..], [Command::Download { id, .. }] if id == "m2"));
    // A text message is answered, as before.
    let cmds = press(
        &mut app,
        [key(KeyCode::Up), key(KeyCode::Up), key(KeyCode::Enter)],
    );
    assert!(cmds.is_empty());
    assert!(
        rows(&screen(&app, 80, 24))
            .join("\n")
            .contains("replying to")
    );
}

#[test]
fn o_opens_a_ready_file_with_the_copy_the_manager_made() {
    let mut app = thread(vec![
        file_msg(
            1,
            false,
            "",
            file(
                "talk.mkv",
                "video/x-matroska",
                300 * MIB,
                AttachmentState::Remote,
            ),
        ),
        file_msg(
            2,
            false,
            "",
            file("notes.txt", "text/plain", 12, AttachmentState::Ready),
        ),
    ]);
    let cmds = press(&mut app, [key(KeyCode::Up), key(KeyCode::Char('o'))]);
    let tag = match &cmds[..] {
        [Command::OpenAttachment { tag, id }] if id == "m2" => *tag,
        other => panic!("expected OpenAttachment, got {other:?}"),
    };
    assert_eq!(app.files.wants_open, None);
    // Someone else's answer opens nothing.
    app.on_event(Event::AttachmentOpened {
        tag: tag + 100,
        id: "m2".into(),
        path: "/tmp/other".into(),
    });
    assert_eq!(app.files.wants_open, None);
    app.on_event(Event::AttachmentOpened {
        tag,
        id: "m2".into(),
        path: "/run/sotto/copy/notes.txt".into(),
    });
    assert_eq!(
        app.files.wants_open.as_deref(),
        Some(std::path::Path::new("/run/sotto/copy/notes.txt"))
    );
    // A file still at the relay cannot be opened: it says how to get it.
    let cmds = press(&mut app, [key(KeyCode::Char('k')), key(KeyCode::Char('o'))]);
    assert!(cmds.is_empty());
    let status = app.status.clone().unwrap();
    assert!(status.error && status.text.contains("Enter downloads it"));
}

#[test]
fn s_asks_where_and_enter_saves_there() {
    let mut app = thread(vec![file_msg(
        1,
        false,
        "",
        file(
            "minutes.pdf",
            "application/pdf",
            1000,
            AttachmentState::Ready,
        ),
    )]);
    app.files.save_dir = "~/Downloads/".into();
    press(&mut app, [key(KeyCode::Up), key(KeyCode::Char('s'))]);
    assert_eq!(app.composer.text(), "~/Downloads/minutes.pdf");
    assert!(text(&app).contains("save to (Esc cancels)"));
    // Esc: nothing saved, the composer is free again.
    let cmds = press(&mut app, [key(KeyCode::Esc)]);
    assert!(cmds.is_empty() && app.composer.text().is_empty());
    press(&mut app, [key(KeyCode::Up), key(KeyCode::Char('s'))]);
    let mut keys = vec![ctrl('u')];
    keys.extend(typing("/tmp/Tuesday minutes.pdf"));
    keys.push(key(KeyCode::Enter));
    let cmds = press(&mut app, keys);
    let tag = match &cmds[..] {
        [Command::SaveAttachment { tag, id, dest }] if id == "m1" => {
            assert_eq!(dest, std::path::Path::new("/tmp/Tuesday minutes.pdf"));
            *tag
        }
        other => panic!("expected SaveAttachment, got {other:?}"),
    };
    // The next Enter sends a message again.
    assert!(app.files.saving.is_none());
    app.on_event(Event::AttachmentSaved {
        tag,
        id: "m1".into(),
        path: "/tmp/Tuesday minutes.pdf".into(),
    });
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("saved to /tmp/Tuesday minutes.pdf")
    );
}

#[test]
fn slash_attach_takes_a_quoted_path_and_a_caption() {
    let mut app = thread(vec![msg(1, "bob", false, false, "send it")]);
    let mut keys = typing(r#"/attach "~/my photos/cat 1.png" he is asleep"#);
    keys.push(key(KeyCode::Enter));
    let cmds = press(&mut app, keys);
    let home = dirs::home_dir().unwrap();
    match &cmds[..] {
        [
            Command::Attach {
                to,
                secret: false,
                path,
                caption,
                ..
            },
        ] => {
            assert_eq!(to, "bob");
            assert_eq!(path, &home.join("my photos/cat 1.png"));
            assert_eq!(caption.as_deref(), Some("he is asleep"));
        }
        other => panic!("expected Attach, got {other:?}"),
    }
    // A backslash keeps a space too; no caption is None.
    let mut keys = typing(r"/attach /tmp/a\ b.txt");
    keys.push(key(KeyCode::Enter));
    let cmds = press(&mut app, keys);
    assert!(
        matches!(&cmds[..], [Command::Attach { path, caption: None, .. }] if path == std::path::Path::new("/tmp/a b.txt"))
    );
}

/// What a key does once the terminal loop has looked at the file system.
fn press_resolved(app: &mut App, k: crossterm::event::KeyEvent) -> Vec<Command> {
    let action = KeyMap::default().action(app, k).expect("a bound key");
    let action = files::resolve(app, action);
    app.update(action)
}

#[test]
fn tab_completes_a_path_after_slash_attach() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    std::fs::write(dir.path().join("photos/cat 1.png"), b"png").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"a").unwrap();
    std::fs::write(dir.path().join("notes.md"), b"b").unwrap();
    let base = dir.path().display().to_string();
    let mut app = thread(vec![msg(1, "bob", false, false, "send it")]);
    press(&mut app, typing(&format!("/attach {base}/ph")));
    press_resolved(&mut app, key(KeyCode::Tab));
    assert_eq!(app.composer.text(), format!("/attach {base}/photos/"));
    press_resolved(&mut app, key(KeyCode::Tab));
    assert_eq!(
        app.composer.text(),
        format!(r"/attach {base}/photos/cat\ 1.png ")
    );
    // Two candidates: the common part, and the choices on the status line.
    press(&mut app, [ctrl('u')]);
    press(&mut app, typing(&format!("/attach {base}/no")));
    press_resolved(&mut app, key(KeyCode::Tab));
    assert_eq!(app.composer.text(), format!("/attach {base}/notes."));
    let status = app.status.clone().unwrap().text;
    assert!(status.contains("notes.md") && status.contains("notes.txt"));
    // Tab after another command still completes commands.
    press(&mut app, [ctrl('u')]);
    press(&mut app, typing("/att"));
    press_resolved(&mut app, key(KeyCode::Tab));
    assert_eq!(app.composer.text(), "/attach ");
}

#[test]
fn a_pasted_file_path_offers_to_attach_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, vec![0u8; 2048]).unwrap();
    let mut app = thread(vec![msg(1, "bob", false, false, "send it")]);
    let paste = |app: &mut App, text: String| {
        let action = files::resolve(app, Action::Edit(Edit::Paste(text)));
        app.update(action)
    };
    assert!(paste(&mut app, path.display().to_string()).is_empty());
    let status = app.status.clone().unwrap().text;
    assert!(
        status.contains("attach report.pdf (2.0 KiB)? y"),
        "{status}"
    );
    assert!(app.composer.text().is_empty());
    let cmds = press(&mut app, [key(KeyCode::Char('y'))]);
    assert!(
        matches!(&cmds[..], [Command::Attach { path: p, caption: None, .. }] if p == &path),
        "{cmds:?}"
    );
    // n: the path is pasted as text after all.
    paste(&mut app, path.display().to_string());
    assert!(press(&mut app, [key(KeyCode::Char('n'))]).is_empty());
    assert_eq!(app.composer.text(), path.display().to_string());
    // Text that merely mentions the file is pasted as it is.
    press(&mut app, [ctrl('u')]);
    paste(&mut app, format!("see {}", path.display()));
    assert_eq!(app.composer.text(), format!("see {}", path.display()));
    assert!(app.files.offer.is_none());
}

/// A picture's first row on screen: the row holding the most half-block cells.
fn picture_cells(backend: &ratatui::backend::TestBackend) -> usize {
    let buf = backend.buffer();
    buf.content()
        .iter()
        .filter(|c| c.symbol() == "▀" || c.symbol() == "▄")
        .count()
}

fn gradient(width: u32, height: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            160,
            255,
        ])
    })
}

#[test]
fn a_ready_picture_is_asked_for_once_per_size_and_drawn_in_half_blocks() {
    let mut app = app_with_bob();
    let pic = file_msg(
        3,
        false,
        "the view from the hut",
        file("view.png", "image/png", 80_000, AttachmentState::Ready),
    );
    let cmds = app.on_event(Event::Message(pic));
    let (max_w, max_h) = match &cmds[..] {
        [
            Command::Preview { id, max_w, max_h },
            Command::MarkShown { .. },
        ] if id == "m3" => (*max_w, *max_h),
        other => panic!("expected one preview request, got {other:?}"),
    };
    assert!(max_w > 0 && max_h > 0);
    // Asked once: the next frame asks nothing more at the same size.
    assert!(app.want_pictures().is_empty());
    // Before the picture comes, the file line alone.
    assert_eq!(picture_cells(&screen(&app, 80, 24)), 0);
    app.on_event(Event::Preview {
        id: "m3".into(),
        width: 1600,
        height: 1200,
        image: Some(Arc::new(gradient(max_w, max_h * 3 / 4))),
    });
    let backend = screen(&app, 80, 24);
    assert!(picture_cells(&backend) > 100, "{backend:?}");
    let text = shown(&backend);
    assert!(text.contains("📎 view.png") && text.contains("the view from the hut"));
    insta::assert_snapshot!("file_picture_80x24", backend);
    // A narrower screen asks again, for the smaller size.
    app.screen = (50, 24);
    let again = app.want_pictures();
    assert!(
        matches!(&again[..], [Command::Preview { max_w: w, .. }] if *w < max_w),
        "{again:?}"
    );
    // When the message expires its picture goes from memory with it.
    app.on_event(Event::Expired(vec![Expired {
        id: "m3".into(),
        contact: "bob".into(),
        secret: false,
    }]));
    assert!(app.files.pictures.get("m3").is_none());
    assert_eq!(picture_cells(&screen(&app, 80, 24)), 0);
}

#[test]
fn with_images_off_a_picture_is_one_placeholder_line() {
    let mut app = app_with_bob();
    app.files.images = false;
    let pic = file_msg(
        3,
        false,
        "",
        file("view.png", "image/png", 80_000, AttachmentState::Ready),
    );
    let cmds = app.on_event(Event::Message(pic));
    assert!(
        matches!(
            &cmds[..],
            [
                Command::Preview {
                    max_w: 0,
                    max_h: 0,
                    ..
                },
                Command::MarkShown { .. }
            ]
        ),
        "only the size is asked: {cmds:?}"
    );
    assert!(text(&app).contains("[image: view.png]"));
    app.on_event(Event::Preview {
        id: "m3".into(),
        width: 640,
        height: 480,
        image: None,
    });
    let backend = screen(&app, 80, 24);
    assert!(
        rows(&backend)
            .join("\n")
            .contains("[image: view.png 640×480]")
    );
    assert_eq!(picture_cells(&backend), 0);
}
