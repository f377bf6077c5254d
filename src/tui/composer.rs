//! The composer: the text being written, its cursor, the readline-style edits on it, the
//! history of what was sent this session, and how it lays out on a few screen rows.
//!
//! Pure: no terminal, no clock, no I/O. Knows nothing of threads, commands or the manager;
//! the app tells it whether the open thread is secret so that a secret message is never
//! recalled into a normal thread. The history lives in memory only and goes with the process.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::wrap;

/// How many rows the composer grows to before it scrolls.
pub const MAX_ROWS: usize = 5;
/// How many entries the history keeps.
const HISTORY: usize = 100;
/// A tab in pasted or edited text becomes this many spaces: the screen cannot show a tab
/// at a known width, and a message should look the same on both sides.
const TAB: &str = "    ";

/// One edit of the composer, whatever key or event asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Insert(char),
    /// Text from a bracketed paste: kept whole, newlines and indentation included.
    Paste(String),
    Newline,
    Backspace,
    Delete,
    Left,
    Right,
    LineStart,
    LineEnd,
    WordBack,
    WordForward,
    DeleteWordBack,
    KillToStart,
    KillToEnd,
    /// Puts back what the last kill (Ctrl-W, Ctrl-U, Ctrl-K) took.
    Yank,
    /// The previous line, or on the first line the previous entry of the history.
    Up,
    /// The next line, or on the last line the next entry of the history.
    Down,
    /// Empties the composer; Up brings the text back.
    Clear,
}

/// A sent (or cleared) text, and whether it was written in a secret thread.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    text: String,
    secret: bool,
}

/// Multi-line text with a cursor (a byte index, always on a character boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Composer {
    text: String,
    cursor: usize,
    history: Vec<Entry>,
    /// The history entry on screen while walking it with Up/Down, and the text that was
    /// being written before the walk began.
    walk: Option<(usize, String)>,
    killed: String,
}

/// What the composer's area shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The visible rows, top to bottom.
    pub rows: Vec<String>,
    /// The cursor's row (within `rows`) and column.
    pub cursor: (usize, usize),
    /// Rows scrolled out above and below.
    pub above: usize,
    pub below: usize,
}

/// Removes what must not reach a message from pasted or edited text: carriage returns
/// (Windows line ends), tabs (made spaces) and other control characters, which the other
/// side's terminal could take as commands.
pub fn clean(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str(TAB),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Composer {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The cursor as a byte index into `text()`.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Replaces the text (from the editor or a completion), cursor at `cursor` (clamped to
    /// a character boundary of the new text).
    pub fn set(&mut self, text: String, cursor: usize) {
        let mut cursor = cursor.min(text.len());
        while !text.is_char_boundary(cursor) {
            cursor -= 1;
        }
        self.text = text;
        self.cursor = cursor;
        self.walk = None;
    }

    /// Takes the text to send or run, and keeps it in the history.
    pub fn take(&mut self, secret: bool) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.walk = None;
        self.remember(&text, secret);
        text
    }

    fn remember(&mut self, text: &str, secret: bool) {
        if text.trim().is_empty() {
            return;
        }
        self.history.retain(|e| e.text != text);
        self.history.push(Entry {
            text: text.to_string(),
            secret,
        });
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
    }

    /// Applies an edit. `secret`: the open thread is secret, so entries written in secret
    /// threads may be recalled; in a normal thread they are skipped.
    pub fn apply(&mut self, edit: Edit, secret: bool) {
        if !matches!(edit, Edit::Up | Edit::Down) {
            // Editing a recalled entry makes it the text being written.
            self.walk = None;
        }
        match edit {
            Edit::Insert(c) => self.insert(&c.to_string()),
            Edit::Paste(s) => self.insert(&clean(&s)),
            Edit::Newline => self.insert("\n"),
            Edit::Backspace => {
                let at = self.prev_char();
                self.text.replace_range(at..self.cursor, "");
                self.cursor = at;
            }
            Edit::Delete => {
                let to = self.next_char();
                self.text.replace_range(self.cursor..to, "");
            }
            Edit::Left => self.cursor = self.prev_char(),
            Edit::Right => self.cursor = self.next_char(),
            Edit::LineStart => self.cursor = self.line_start(),
            Edit::LineEnd => self.cursor = self.line_end(),
            Edit::WordBack => self.cursor = self.word_back(),
            Edit::WordForward => self.cursor = self.word_forward(),
            Edit::DeleteWordBack => {
                // Like a shell's Ctrl-W: back over spaces, then over the word before them.
                let before = &self.text[..self.cursor];
                let trimmed = before.trim_end();
                let at = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
                    i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
                });
                self.kill(at, self.cursor);
            }
            Edit::KillToStart => {
                // At the start of a line, Ctrl-U takes the newline before it.
                let at = match self.line_start() {
                    s if s == self.cursor => self.prev_char(),
                    s => s,
                };
                self.kill(at, self.cursor);
            }
            Edit::KillToEnd => {
                let to = match self.line_end() {
                    e if e == self.cursor => self.next_char(),
                    e => e,
                };
                self.kill(self.cursor, to);
            }
            Edit::Yank => {
                let text = self.killed.clone();
                self.insert(&text);
            }
            Edit::Up => self.up(secret),
            Edit::Down => self.down(secret),
            Edit::Clear => {
                let text = std::mem::take(&mut self.text);
                self.cursor = 0;
                self.remember(&text, secret);
            }
        }
    }

    fn insert(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
    }

    fn kill(&mut self, from: usize, to: usize) {
        if from < to {
            self.killed = self.text[from..to].to_string();
            self.text.replace_range(from..to, "");
            self.cursor = from;
        }
    }

    fn prev_char(&self) -> usize {
        self.text[..self.cursor]
            .chars()
            .next_back()
            .map_or(0, |c| self.cursor - c.len_utf8())
    }

    fn next_char(&self) -> usize {
        self.text[self.cursor..]
            .chars()
            .next()
            .map_or(self.cursor, |c| self.cursor + c.len_utf8())
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    /// The start of the word before the cursor (letters and digits make a word).
    fn word_back(&self) -> usize {
        let before = &self.text[..self.cursor];
        let end = before
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_alphanumeric())
            .map_or(0, |(i, _)| i);
        before[..end]
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// The end of the word after the cursor.
    fn word_forward(&self) -> usize {
        let after = &self.text[self.cursor..];
        let start = after
            .char_indices()
            .find(|(_, c)| c.is_alphanumeric())
            .map_or(after.len(), |(i, _)| i);
        let end = after[start..]
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(after.len(), |(i, _)| start + i);
        self.cursor + end
    }

    /// Moves to the same column of the line above (or below), clamped to its length.
    fn move_to_line(&mut self, start: usize) {
        let column = self.text[self.line_start()..self.cursor].width();
        let line = &self.text[start..];
        let line = &line[..line.find('\n').unwrap_or(line.len())];
        let mut at = 0;
        let mut used = 0;
        for (i, c) in line.char_indices() {
            let w = c.width().unwrap_or(0);
            if used + w > column {
                break;
            }
            used += w;
            at = i + c.len_utf8();
        }
        self.cursor = start + at;
    }

    fn up(&mut self, secret: bool) {
        let start = self.line_start();
        if start > 0 {
            let prev = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
            return self.move_to_line(prev);
        }
        let from = self.walk.as_ref().map_or(self.history.len(), |(i, _)| *i);
        let Some(i) = (0..from).rev().find(|&i| secret || !self.history[i].secret) else {
            return;
        };
        if self.walk.is_none() {
            self.walk = Some((i, std::mem::take(&mut self.text)));
        }
        self.show(i);
    }

    fn down(&mut self, secret: bool) {
        let end = self.line_end();
        if end < self.text.len() {
            return self.move_to_line(end + 1);
        }
        let Some((from, _)) = self.walk else {
            return;
        };
        match (from + 1..self.history.len()).find(|&i| secret || !self.history[i].secret) {
            Some(i) => self.show(i),
            None => {
                // Past the newest entry: back to what was being written.
                let (_, draft) = self.walk.take().unwrap_or_default();
                self.cursor = draft.len();
                self.text = draft;
            }
        }
    }

    fn show(&mut self, i: usize) {
        self.text = self.history[i].text.clone();
        self.cursor = self.text.len();
        if let Some((at, _)) = &mut self.walk {
            *at = i;
        }
    }

    /// Lays the text out at `width` columns on at most `max_rows` rows, scrolled so the
    /// cursor is visible and, when it can be, the end of the text too.
    pub fn view(&self, width: usize, max_rows: usize) -> View {
        let width = width.max(1);
        let ranges = wrap::rows(&self.text, width);
        let mut rows: Vec<String> = ranges.iter().map(|r| self.text[r.clone()].into()).collect();
        let mut cursor = (0, 0);
        for (i, r) in ranges.iter().enumerate() {
            let next_starts_here = ranges.get(i + 1).is_some_and(|n| n.start == self.cursor);
            if r.start <= self.cursor && self.cursor <= r.end && !next_starts_here {
                cursor = (i, self.text[r.start..self.cursor].width());
                break;
            }
        }
        if cursor.1 >= width {
            // A full row: the cursor waits at the start of the next one.
            cursor = (cursor.0 + 1, 0);
            if cursor.0 == rows.len() {
                rows.push(String::new());
            }
        }
        let max_rows = max_rows.max(1);
        let top = cursor.0.min(rows.len().saturating_sub(max_rows));
        let below = rows.len().saturating_sub(top + max_rows);
        let shown = rows.drain(top..).take(max_rows).collect();
        View {
            rows: shown,
            cursor: (cursor.0 - top, cursor.1),
            above: top,
            below,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Composer {
        let mut c = Composer::default();
        for ch in text.chars() {
            c.apply(Edit::Insert(ch), false);
        }
        c
    }

    /// The text with `|` where the cursor is.
    fn shown(c: &Composer) -> String {
        format!("{}|{}", &c.text[..c.cursor], &c.text[c.cursor..])
    }

    fn after(c: &mut Composer, edits: &[Edit]) -> String {
        for e in edits {
            c.apply(e.clone(), false);
        }
        shown(c)
    }

    #[test]
    fn cursor_moves_by_char_word_and_line() {
        let mut c = typed("héllo wörld, again");
        assert_eq!(after(&mut c, &[Edit::WordBack]), "héllo wörld, |again");
        assert_eq!(after(&mut c, &[Edit::WordBack]), "héllo |wörld, again");
        assert_eq!(after(&mut c, &[Edit::Left]), "héllo| wörld, again");
        assert_eq!(after(&mut c, &[Edit::WordForward]), "héllo wörld|, again");
        assert_eq!(after(&mut c, &[Edit::LineStart]), "|héllo wörld, again");
        assert_eq!(after(&mut c, &[Edit::Left]), "|héllo wörld, again");
        assert_eq!(
            after(&mut c, &[Edit::Right, Edit::Right]),
            "hé|llo wörld, again"
        );
        assert_eq!(after(&mut c, &[Edit::LineEnd]), "héllo wörld, again|");
        assert_eq!(after(&mut c, &[Edit::Right]), "héllo wörld, again|");
    }

    #[test]
    fn kills_take_a_word_or_half_a_line_and_yank_puts_it_back() {
        let mut c = typed("send it  ");
        assert_eq!(after(&mut c, &[Edit::DeleteWordBack]), "send |");
        assert_eq!(after(&mut c, &[Edit::Yank]), "send it  |");
        let mut c = typed("one\ntwo three");
        c.apply(Edit::WordBack, false);
        assert_eq!(after(&mut c, &[Edit::KillToStart]), "one\n|three");
        assert_eq!(after(&mut c, &[Edit::KillToStart]), "one|three");
        assert_eq!(after(&mut c, &[Edit::KillToEnd]), "one|");
        assert_eq!(after(&mut c, &[Edit::LineStart, Edit::Yank]), "three|one");
        assert_eq!(after(&mut c, &[Edit::Backspace, Edit::Delete]), "thre|ne");
    }

    #[test]
    fn up_and_down_move_between_lines_before_the_history() {
        let mut c = Composer::default();
        for sent in ["first", "second"] {
            c.set(sent.into(), sent.len());
            c.take(false);
        }
        c.set("a longer line\nshort\nthird line".into(), usize::MAX);
        assert_eq!(
            after(&mut c, &[Edit::Up]),
            "a longer line\nshort|\nthird line"
        );
        assert_eq!(
            after(&mut c, &[Edit::Up]),
            "a lon|ger line\nshort\nthird line"
        );
        // On the first line, Up walks the history; Down comes back to the draft.
        assert_eq!(after(&mut c, &[Edit::Up]), "second|");
        assert_eq!(after(&mut c, &[Edit::Up]), "first|");
        assert_eq!(after(&mut c, &[Edit::Up]), "first|");
        assert_eq!(after(&mut c, &[Edit::Down]), "second|");
        assert_eq!(
            after(&mut c, &[Edit::Down]),
            "a longer line\nshort\nthird line|"
        );
        assert_eq!(
            after(&mut c, &[Edit::Down]),
            "a longer line\nshort\nthird line|"
        );
    }

    #[test]
    fn a_secret_message_is_never_recalled_into_a_normal_thread() {
        let mut c = Composer::default();
        c.set("hello".into(), 5);
        c.take(false);
        c.set("the secret".into(), 10);
        c.take(true);
        c.apply(Edit::Up, false);
        assert_eq!(c.text(), "hello");
        c.apply(Edit::Down, false);
        c.apply(Edit::Up, true);
        assert_eq!(c.text(), "the secret");
    }

    #[test]
    fn clear_empties_and_up_brings_it_back() {
        let mut c = typed("half a thought");
        c.apply(Edit::Clear, false);
        assert!(c.is_empty());
        assert_eq!(after(&mut c, &[Edit::Up]), "half a thought|");
    }

    #[test]
    fn paste_keeps_lines_and_indentation_and_drops_control_characters() {
        let mut c = typed("code: ");
        c.apply(
            Edit::Paste("fn main() {\r\n\tprint!(\"\x1b[2J\");\r\n}".into()),
            false,
        );
        assert_eq!(shown(&c), "code: fn main() {\n    print!(\"[2J\");\n}|");
    }

    #[test]
    fn the_view_wraps_grows_and_scrolls_to_the_cursor() {
        let c = typed("one two three four");
        let v = c.view(8, MAX_ROWS);
        assert_eq!(v.rows, ["one two", "three", "four"]);
        assert_eq!(v.cursor, (2, 4));
        let c = typed("abcd");
        assert_eq!(c.view(4, 5).rows, ["abcd", ""]);
        assert_eq!(c.view(4, 5).cursor, (1, 0));
        let mut c = typed(&"line\n".repeat(8));
        let v = c.view(20, 5);
        assert_eq!(
            (v.rows.len(), v.above, v.below, v.cursor),
            (5, 4, 0, (4, 0))
        );
        c.apply(Edit::Up, false);
        for _ in 0..7 {
            c.apply(Edit::Up, false);
        }
        let v = c.view(20, 5);
        assert_eq!((v.above, v.below, v.cursor), (0, 4, (0, 0)));
    }
}
