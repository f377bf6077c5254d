//! Tab completion in the composer: slash-command names, and handles where a command takes
//! one.
//!
//! Pure: takes the composer's line, its cursor and the candidates, returns the completed line
//! or the choices left. Which commands exist and which take a handle is read from the
//! commands' own help (`commands::HELP`), so a new command completes without a change here.

use super::commands;

/// What Tab did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The new line and cursor (byte index); the same as before when nothing was added.
    pub text: String,
    pub cursor: usize,
    /// More than one candidate is left: these are they, for the status line.
    pub choices: Vec<String>,
}

/// Completes the word before `cursor` in `line` (which starts with `/`): the command name
/// when it is the first word, otherwise a handle from `handles` if the command takes one.
pub fn complete(line: &str, cursor: usize, handles: &[&str]) -> Completion {
    let (before, rest) = line.split_at(cursor);
    let word_start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[word_start..];
    let command = line.split_whitespace().next().unwrap_or("");
    let candidates: Vec<&str> = if word_start == 0 {
        commands::HELP
            .iter()
            .filter_map(|(usage, _)| usage.split_whitespace().next())
            .collect()
    } else if usage(command).is_some_and(|u| u.contains("HANDLE")) {
        handles.to_vec()
    } else {
        Vec::new()
    };
    let matching: Vec<&str> = candidates
        .into_iter()
        .filter(|c| c.starts_with(word))
        .collect();
    let (fill, choices) = match matching.as_slice() {
        [] => (word.to_string(), Vec::new()),
        [one] => {
            // A command that takes arguments gets the space before them.
            let space = word_start == 0
                && usage(one).is_some_and(|u| u.contains(' '))
                && !rest.starts_with(char::is_whitespace);
            (format!("{one}{}", if space { " " } else { "" }), Vec::new())
        }
        many => (
            common_prefix(many).to_string(),
            many.iter().map(|s| s.to_string()).collect(),
        ),
    };
    let text = format!("{}{fill}{rest}", &line[..word_start]);
    Completion {
        cursor: word_start + fill.len(),
        text,
        choices,
    }
}

/// The usage line of a command (`/add HANDLE`), from the help.
fn usage(name: &str) -> Option<&'static str> {
    commands::HELP
        .iter()
        .map(|(usage, _)| *usage)
        .find(|u| u.split_whitespace().next() == Some(name))
}

pub(super) fn common_prefix<'a>(words: &[&'a str]) -> &'a str {
    let first = words[0];
    let mut end = first.len();
    for w in &words[1..] {
        end = first
            .char_indices()
            .zip(w.chars())
            .find(|((_, a), b)| a != b)
            .map_or(end.min(w.len()), |((i, _), _)| i.min(end));
    }
    &first[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(line: &str, handles: &[&str]) -> (String, Vec<String>) {
        let c = complete(line, line.len(), handles);
        assert_eq!(c.cursor, c.text.len());
        (c.text, c.choices)
    }

    #[test]
    fn command_names_complete_and_ambiguity_lists_the_choices() {
        assert_eq!(tab("/ti", &[]), ("/timer ".into(), vec![]));
        assert_eq!(tab("/sec", &[]), ("/secret".into(), vec![]));
        assert_eq!(
            tab("/se", &[]),
            ("/se".into(), vec!["/secret".into(), "/search".into()])
        );
        let (text, choices) = tab("/", &[]);
        assert_eq!(text, "/");
        assert!(choices.contains(&"/verify".to_string()) && choices.len() > 3);
        assert_eq!(tab("/zz", &[]), ("/zz".into(), vec![]));
    }

    #[test]
    fn handles_complete_after_a_command_that_takes_one() {
        let handles = ["bob", "bobby", "carol"];
        assert_eq!(tab("/add c", &handles), ("/add carol".into(), vec![]));
        assert_eq!(
            tab("/add b", &handles),
            ("/add bob".into(), vec!["bob".into(), "bobby".into()])
        );
        // /timer takes no handle.
        assert_eq!(tab("/timer c", &handles), ("/timer c".into(), vec![]));
    }

    #[test]
    fn text_after_the_cursor_stays() {
        let c = complete("/ti 5m", 3, &[]);
        assert_eq!((c.text.as_str(), c.cursor), ("/timer 5m", 6));
    }
}
