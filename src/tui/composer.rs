//! The composer: the text being written, its cursor, the readline-style edits on it, the
//! history of what was sent this session, and how it lays out on a few screen rows.
//!
//! Pure: no terminal, no clock, no I/O. Knows nothing of threads, commands or the manager;
//! the app tells it whether the open thread is secret so that a secret message is never
//! recalled into a normal thread. The history lives in memory only and goes with the process.

use std::ops::Range;

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
    /// The screen row above (a long line wraps onto several), or on the first row the
    /// previous entry of the history.
    Up,
    /// The screen row below, or on the last row the next entry of the history.
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
    /// threads may be recalled; in a normal thread they are skipped. `width`: the columns the
    /// text is laid out at (as `view` is given), which Up and Down move through by rows.
    pub fn apply(&mut self, edit: Edit, secret: bool, width: usize) {
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
            Edit::Up => self.up(secret, width),
            Edit::Down => self.down(secret, width),
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

    /// Where the cursor is drawn among `rows` (as `wrap::rows` lays the text out at
    /// `width`): its row and column. At the end of a full row it waits at the start of the
    /// next one, which may be a row past the last.
    fn place(&self, rows: &[Range<usize>], width: usize) -> (usize, usize) {
        let mut at = (0, 0);
        for (i, r) in rows.iter().enumerate() {
            let next_starts_here = rows.get(i + 1).is_some_and(|n| n.start == self.cursor);
            if r.start <= self.cursor && self.cursor <= r.end && !next_starts_here {
                at = (i, self.text[r.start..self.cursor].width());
                break;
            }
        }
        if at.1 >= width { (at.0 + 1, 0) } else { at }
    }

    /// Moves to `column` of row `row` (or as near as it reaches), never to where the cursor
    /// would be drawn on another row.
    fn move_to_row(&mut self, rows: &[Range<usize>], row: usize, column: usize) {
        let r = rows[row].clone();
        // A row cut inside a line ends where the next begins: its last place is before its
        // last character.
        let cut = rows.get(row + 1).is_some_and(|n| n.start == r.end);
        let mut at = r.start;
        let mut used = 0;
        for (i, c) in self.text[r.clone()].char_indices() {
            let w = c.width().unwrap_or(0);
            let last = r.start + i + c.len_utf8() == r.end;
            if used + w > column || (cut && last) {
                break;
            }
            used += w;
            at = r.start + i + c.len_utf8();
        }
        self.cursor = at;
    }

    fn up(&mut self, secret: bool, width: usize) {
        let width = width.max(1);
        let rows = wrap::rows(&self.text, width);
        let (row, column) = self.place(&rows, width);
        if row > 0 {
            return self.move_to_row(&rows, row - 1, column);
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

    fn down(&mut self, secret: bool, width: usize) {
        let width = width.max(1);
        let rows = wrap::rows(&self.text, width);
        let (row, column) = self.place(&rows, width);
        if row + 1 < rows.len() {
            return self.move_to_row(&rows, row + 1, column);
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
        let cursor = self.place(&ranges, width);
        if cursor.0 == rows.len() {
            // After a full last row: the cursor's row is an empty one below it.
            rows.push(String::new());
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

    /// Wide enough that no line of these tests wraps, unless a test says otherwise.
    const WIDE: usize = 80;

    fn typed(text: &str) -> Composer {
        let mut c = Composer::default();
        for ch in text.chars() {
            c.apply(Edit::Insert(ch), false, WIDE);
        }
        c
    }

    /// The text with `|` where the cursor is.
    fn shown(c: &Composer) -> String {
        format!("{}|{}", &c.text[..c.cursor], &c.text[c.cursor..])
    }

    fn after(c: &mut Composer, edits: &[Edit]) -> String {
        after_at(c, edits, WIDE)
    }

    /// `after` with the text laid out at `width` columns.
    fn after_at(c: &mut Composer, edits: &[Edit], width: usize) -> String {
        for e in edits {
            c.apply(e.clone(), false, width);
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
        c.apply(Edit::WordBack, false, WIDE);
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
        c.apply(Edit::Up, false, WIDE);
        assert_eq!(c.text(), "hello");
        c.apply(Edit::Down, false, WIDE);
        c.apply(Edit::Up, true, WIDE);
        assert_eq!(c.text(), "the secret");
    }

    #[test]
    fn clear_empties_and_up_brings_it_back() {
        let mut c = typed("half a thought");
        c.apply(Edit::Clear, false, WIDE);
        assert!(c.is_empty());
        assert_eq!(after(&mut c, &[Edit::Up]), "half a thought|");
    }

    #[test]
    fn paste_keeps_lines_and_indentation_and_drops_control_characters() {
        let mut c = typed("code: ");
        c.apply(
            Edit::Paste("fn main() {\r\n\tprint!(\"\x1b[2J\");\r\n}".into()),
            false,
            WIDE,
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
        for _ in 0..8 {
            c.apply(Edit::Up, false, 20);
        }
        let v = c.view(20, 5);
        assert_eq!((v.above, v.below, v.cursor), (0, 4, (0, 0)));
    }

    #[test]
    fn up_and_down_move_by_wrapped_rows_keeping_the_column() {
        // At 10 columns: "the quick" / "brown fox" / "jumps over" / "the lazy" / "dog".
        let mut c = typed("the quick brown fox jumps over the lazy dog");
        let rows = |c: &Composer| c.view(10, 9).rows;
        assert_eq!(
            rows(&c),
            ["the quick", "brown fox", "jumps over", "the lazy", "dog"]
        );
        assert_eq!(
            after_at(&mut c, &[Edit::Up], 10),
            "the quick brown fox jumps over the| lazy dog"
        );
        assert_eq!(
            after_at(&mut c, &[Edit::Up], 10),
            "the quick brown fox jum|ps over the lazy dog"
        );
        assert_eq!(
            after_at(&mut c, &[Edit::Right, Edit::Right, Edit::Right], 10),
            "the quick brown fox jumps |over the lazy dog"
        );
        // Column 6 is past the end of "dog": the cursor stops at its end.
        assert_eq!(
            after_at(&mut c, &[Edit::Down], 10),
            "the quick brown fox jumps over the la|zy dog"
        );
        assert_eq!(
            after_at(&mut c, &[Edit::Down], 10),
            "the quick brown fox jumps over the lazy dog|"
        );
        // The last row: Down with nothing recalled stays.
        assert_eq!(
            after_at(&mut c, &[Edit::Down], 10),
            "the quick brown fox jumps over the lazy dog|"
        );
        assert_eq!(
            after_at(&mut c, &[Edit::Up, Edit::Up, Edit::Up, Edit::Up], 10),
            "the| quick brown fox jumps over the lazy dog"
        );
    }

    #[test]
    fn the_history_is_walked_only_from_the_first_and_last_rows() {
        let mut c = Composer::default();
        c.set("sent before".into(), 0);
        c.take(false);
        let long = "one two three four five six";
        c.set(long.into(), long.len());
        // At 9 columns: "one two" / "three" / "four five" / "six"; three rows up to the top.
        for _ in 0..3 {
            c.apply(Edit::Up, false, 9);
            assert_eq!(c.text(), long, "left the text before its first row");
        }
        assert_eq!(shown(&c), "one| two three four five six");
        assert_eq!(after_at(&mut c, &[Edit::Up], 9), "sent before|");
        // The recalled entry wraps too ("sent" / "before"): Down walks back only from its
        // last row, to the text being written.
        assert_eq!(after_at(&mut c, &[Edit::Up], 9), "sent| before");
        assert_eq!(after_at(&mut c, &[Edit::Down], 9), "sent befo|re");
        assert_eq!(
            after_at(&mut c, &[Edit::Down], 9),
            "one two three four five six|"
        );
    }

    #[test]
    fn a_row_move_never_lands_where_the_cursor_is_drawn_on_another_row() {
        // Cut words, wide characters (a row may end a column short), newlines, indentation.
        let texts = [
            "abcdefghijk lmno",
            "ab日本語の文 x",
            "one\n\n  indented line here\nend",
            "a  b   c    d",
        ];
        for text in texts {
            for width in 3..8 {
                let mut positions: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
                positions.push(text.len());
                for at in positions {
                    for (edit, step) in [(Edit::Up, -1isize), (Edit::Down, 1)] {
                        let mut c = Composer::default();
                        c.set(text.into(), at);
                        let before = c.view(width, 99);
                        let rows = wrap::rows(text, width).len();
                        c.apply(edit.clone(), false, width);
                        let now = c.view(width, 99);
                        let from = before.cursor.0 as isize;
                        let last = from as usize + 1 >= rows;
                        let expected = match (step, from) {
                            (-1, 0) => 0,
                            (1, _) if last => from,
                            _ => from + step,
                        };
                        assert_eq!(
                            now.cursor.0 as isize, expected,
                            "{edit:?} at {at} of {text:?}, width {width}"
                        );
                        assert_eq!(c.text(), text);
                        // The column is kept where the row reaches it.
                        if expected != from {
                            assert!(now.cursor.1 <= before.cursor.1, "{edit:?} {text:?} {at}");
                        }
                    }
                }
            }
        }
    }
}
