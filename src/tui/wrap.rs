//! Word wrapping for the terminal: which part of a text goes on which screen row.
//!
//! Owns the wrapping rule shared by the thread view and the composer, so a message looks the
//! same while typed and once sent: break at a space when a word does not fit, cut a word longer
//! than a row, keep every newline and every leading space (indentation). Pure; answers in byte
//! ranges so the composer can place its cursor on the same rows.

use std::ops::Range;

use unicode_width::UnicodeWidthChar;

/// The byte ranges of `text` shown on each row at `width` columns, top to bottom. A range
/// never holds a newline, nor the space a row was broken at; an empty line is an empty row.
pub fn rows(text: &str, width: usize) -> Vec<Range<usize>> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in text.split('\n') {
        wrap_line(line, line_start, width, &mut out);
        line_start += line.len() + 1;
    }
    out
}

/// Wraps one line (no newline in it) that starts at byte `base` of the whole text.
fn wrap_line(line: &str, base: usize, width: usize, out: &mut Vec<Range<usize>>) {
    let mut start = 0;
    let mut used = 0;
    // A space after some non-space text of this row: where the row may break.
    let mut space: Option<usize> = None;
    let mut has_word = false;
    for (i, c) in line.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > width && i > start {
            if c == ' ' {
                // The space the row breaks at is not shown on either row.
                out.push(base + start..base + i);
                start = i + 1;
                used = 0;
                space = None;
                has_word = false;
                continue;
            }
            match space {
                Some(at) => {
                    out.push(base + start..base + at);
                    start = at + 1;
                    used = line[start..i].chars().map(|c| c.width().unwrap_or(0)).sum();
                    has_word = used > 0;
                }
                None => {
                    out.push(base + start..base + i);
                    start = i;
                    used = 0;
                    has_word = false;
                }
            }
            space = None;
            if used + w > width && i > start {
                // The word since the break is itself wider than a row: cut it.
                out.push(base + start..base + i);
                start = i;
                used = 0;
                has_word = false;
            }
        }
        if c == ' ' {
            if has_word {
                space = Some(i);
            }
        } else {
            has_word = true;
        }
        used += w;
    }
    out.push(base + start..base + line.len());
}

#[cfg(test)]
mod tests {
    use super::rows;

    fn wrapped(text: &str, width: usize) -> Vec<&str> {
        rows(text, width).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn words_move_down_whole_and_long_words_are_cut() {
        assert_eq!(wrapped("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrapped("aaa bbbb", 6), ["aaa", "bbbb"]);
        assert_eq!(wrapped("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrapped("ab cdefghijk", 4), ["ab", "cdef", "ghij", "k"]);
        assert_eq!(wrapped("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrapped("", 5), [""]);
        assert_eq!(wrapped("a\n\nb", 5), ["a", "", "b"]);
    }

    #[test]
    fn indentation_and_inner_spaces_are_kept() {
        assert_eq!(
            wrapped("fn main() {\n    println!();\n}", 40),
            ["fn main() {", "    println!();", "}"]
        );
        assert_eq!(wrapped("a  b", 10), ["a  b"]);
        // Leading spaces are not a place to break a row.
        assert_eq!(wrapped("    abcdef", 6), ["    ab", "cdef"]);
    }

    #[test]
    fn wide_characters_count_their_columns() {
        assert_eq!(wrapped("日本語の文", 4), ["日本", "語の", "文"]);
        for row in wrapped(&"word ".repeat(100), 13) {
            assert!(unicode_width::UnicodeWidthStr::width(row) <= 13);
        }
    }

    #[test]
    fn rows_cover_the_text_in_order() {
        let text = "the quick brown fox\njumps over   the lazy dog";
        let r = rows(text, 6);
        for pair in r.windows(2) {
            assert!(pair[0].end <= pair[1].start);
        }
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, text.len());
    }
}
