//! What the user types to search their messages, made into an SQLite FTS5 query that can
//! never be a syntax error.
//!
//! Pure: owns the rules of a search (which words count, how each one matches) and the sentence
//! a query without words gets. Must not touch the store; `store::search` runs the query.

/// At most this many words count; more would only make every message cost more to match.
pub const MAX_WORDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("type at least one letter or digit to search for")]
    NoWords,
}

/// A search as the user meant it: each word must occur in the message, as a word or as the
/// start of one ("meet" finds "meeting"), in any order, in any case, accents ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    words: Vec<String>,
}

impl Query {
    /// The words of `input`: split at white space; a word with no letter or digit in it
    /// (punctuation, emoji) matches nothing in the index, so it is left out.
    pub fn parse(input: &str) -> Result<Query, QueryError> {
        let words: Vec<String> = input
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .take(MAX_WORDS)
            .map(str::to_string)
            .collect();
        if words.is_empty() {
            return Err(QueryError::NoWords);
        }
        Ok(Query { words })
    }

    /// The words that count, as typed.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The FTS5 expression: each word a quoted phrase (so no character of it is FTS syntax)
    /// matched as a prefix, all of them required.
    pub fn fts(&self) -> String {
        self.words
            .iter()
            .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_quoted_prefix_phrases() {
        let q = Query::parse("  Meet  at\tnoon ").unwrap();
        assert_eq!(q.words(), ["Meet", "at", "noon"]);
        assert_eq!(q.fts(), r#""Meet"* "at"* "noon"*"#);
        // FTS5 operators and quotes are only text inside a phrase.
        let q = Query::parse(r#"say "hi" OR NEAR(x) -y col:z ^a"#).unwrap();
        assert_eq!(
            q.fts(),
            r#""say"* """hi"""* "OR"* "NEAR(x)"* "-y"* "col:z"* "^a"*"#
        );
    }

    #[test]
    fn punctuation_alone_is_no_search() {
        for input in ["", "   ", "?!", "*", "\"", "- : ( )", "🙂 👍"] {
            assert_eq!(Query::parse(input), Err(QueryError::NoWords), "{input:?}");
        }
        assert_eq!(Query::parse("?! ok").unwrap().words(), ["ok"]);
        assert_eq!(
            QueryError::NoWords.to_string(),
            "type at least one letter or digit to search for"
        );
    }

    #[test]
    fn long_queries_are_cut_to_the_first_words() {
        let input = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(Query::parse(&input).unwrap().words().len(), MAX_WORDS);
    }
}
