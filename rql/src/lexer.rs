//! Raw query string → tokens.
//!
//! The query is percent-decoded once here, but every decoded character remembers whether it
//! was written literally or as a `%XX` escape. Only literal `(`, `)`, `,`, `&` and `|` are
//! structure: the official SDK encodes values twice, so one level of encoding is always left
//! in a value after this first decoding, and a structural character that arrives encoded only
//! once (`eq(status,new%29`) is a client mistake, reported as a syntax error rather than guessed
//! at. Comparison characters (`=`, `<`, `>`, `!`) and the quote `'` count whether escaped or not,
//! because ordinary URL encoders escape `<`, `>` and `'` in query strings.

use super::MAX_QUERY_BYTES;
use super::error::RqlError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    Comma,
    /// `&`
    And,
    /// `|`
    Or,
    /// `=`
    Eq,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    /// Unquoted text, decoded once (values are decoded a second time later).
    Word(String),
    /// The text between single quotes, decoded once.
    Quoted(String),
    End,
}

impl Tok {
    /// How the token is named in error messages.
    pub(super) fn describe(&self) -> String {
        let symbol = match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::And => "&",
            Tok::Or => "|",
            Tok::Eq => "=",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Word(text) => return format!("`{}`", super::error::quote(text)),
            Tok::Quoted(text) => return format!("`'{}'`", super::error::quote(text)),
            Tok::End => return "the end of the query".to_owned(),
        };
        format!("`{symbol}`")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 1-based byte offset in the raw query.
    pub(super) pos: usize,
}

/// One character of the once-decoded query.
#[derive(Debug, Clone, Copy)]
struct Char {
    c: char,
    escaped: bool,
    pos: usize,
}

/// Splits the raw query into tokens, ending with [`Tok::End`]. A blank query gives only `End`.
pub(super) fn tokenize(raw: &str) -> Result<Vec<Token>, RqlError> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(RqlError::TooLong {
            max: MAX_QUERY_BYTES,
        });
    }
    let chars = decode_once(raw)?;
    let end = Token {
        tok: Tok::End,
        pos: raw.len() + 1,
    };
    if chars.iter().all(|ch| ch.c.is_whitespace()) {
        return Ok(vec![end]);
    }
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&ch) = chars.get(i) {
        let next = chars.get(i + 1).map(|n| n.c);
        let (tok, width) = match ch.c {
            '(' | ')' | ',' | '&' | '|' if ch.escaped => {
                return Err(RqlError::syntax(
                    format!(
                        "`{}` is percent-encoded only once (values must be encoded twice, as the SDK does)",
                        ch.c
                    ),
                    ch.pos,
                ));
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '&' => (Tok::And, 1),
            '|' => (Tok::Or, 1),
            '=' if next == Some('=') => (Tok::EqEq, 2),
            '=' => (Tok::Eq, 1),
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '<' if next == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '\'' => {
                // Everything up to the next quote is data, structural characters included.
                let text: String = chars
                    .iter()
                    .skip(i + 1)
                    .take_while(|inner| inner.c != '\'')
                    .map(|inner| inner.c)
                    .collect();
                let width = text.chars().count() + 2;
                if chars.get(i + width - 1).is_none_or(|close| close.c != '\'') {
                    return Err(RqlError::syntax("unterminated quoted string", ch.pos));
                }
                (Tok::Quoted(text), width)
            }
            _ => {
                let text: String = chars
                    .iter()
                    .enumerate()
                    .skip(i)
                    .take_while(|(j, inner)| !ends_word(inner.c, chars.get(j + 1).map(|n| n.c)))
                    .map(|(_, inner)| inner.c)
                    .collect();
                let width = text.chars().count();
                (Tok::Word(text), width)
            }
        };
        tokens.push(Token { tok, pos: ch.pos });
        i += width.max(1);
    }
    tokens.push(end);
    Ok(tokens)
}

/// Whether `c` (followed by `next`) ends an unquoted word. A `'` inside a word is data
/// (`O'Brien`); only a word that starts with one is quoted.
fn ends_word(c: char, next: Option<char>) -> bool {
    matches!(c, '(' | ')' | ',' | '&' | '|' | '=' | '<' | '>') || (c == '!' && next == Some('='))
}

/// Percent-decodes once, remembering for each character whether it was escaped and where it
/// started in the raw query. Invalid `%` sequences are kept as they are, as browsers do.
fn decode_once(raw: &str) -> Result<Vec<Char>, RqlError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    // (escaped, raw offset) for each decoded byte.
    let mut origin = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escape = (byte == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escape {
            Some(value) => {
                decoded.push(value);
                origin.push((true, i));
                i += 3;
            }
            None => {
                decoded.push(byte);
                origin.push((false, i));
                i += 1;
            }
        }
    }
    if decoded.contains(&0) {
        // PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
        return Err(RqlError::Invalid(
            "the query contains a NUL character".to_owned(),
        ));
    }
    let text = String::from_utf8(decoded).map_err(|_| RqlError::InvalidUtf8)?;
    Ok(text
        .char_indices()
        .map(|(at, c)| {
            let (escaped, raw_at) = origin.get(at).copied().unwrap_or((false, 0));
            Char {
                c,
                escaped,
                pos: raw_at + 1,
            }
        })
        .collect())
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(raw: &str) -> Vec<Tok> {
        tokenize(raw)
            .unwrap()
            .into_iter()
            .map(|token| token.tok)
            .collect()
    }

    fn word(text: &str) -> Tok {
        Tok::Word(text.to_owned())
    }

    #[test]
    fn splits_calls_and_fiql() {
        assert_eq!(
            toks("eq(a,b)&c>=1|d!=x"),
            vec![
                word("eq"),
                Tok::LParen,
                word("a"),
                Tok::Comma,
                word("b"),
                Tok::RParen,
                Tok::And,
                word("c"),
                Tok::Ge,
                word("1"),
                Tok::Or,
                word("d"),
                Tok::NotEq,
                word("x"),
                Tok::End
            ]
        );
        assert_eq!(
            toks("a==1"),
            vec![word("a"), Tok::EqEq, word("1"), Tok::End]
        );
        assert_eq!(toks("a<=1"), vec![word("a"), Tok::Le, word("1"), Tok::End]);
    }

    #[test]
    fn decodes_once_and_keeps_one_level_for_values() {
        assert_eq!(
            toks("eq(f,my%252Dfn)"),
            vec![
                word("eq"),
                Tok::LParen,
                word("f"),
                Tok::Comma,
                word("my%2Dfn"),
                Tok::RParen,
                Tok::End
            ]
        );
    }

    #[test]
    fn plus_is_not_a_space() {
        assert_eq!(
            toks("a=+01:00"),
            vec![word("a"), Tok::Eq, word("+01:00"), Tok::End]
        );
    }

    #[test]
    fn structure_encoded_once_is_an_error() {
        for raw in [
            "eq(status,new%29",
            "eq%28a,b)",
            "a=1%26b=2",
            "in(a,b%2Cc)",
            "a=1%7Cb=2",
        ] {
            let error = tokenize(raw).unwrap_err();
            assert!(
                error.to_string().contains("percent-encoded only once"),
                "{raw}: {error}"
            );
        }
        assert_eq!(
            tokenize("eq(status,new%29").unwrap_err(),
            RqlError::syntax(
                "`)` is percent-encoded only once (values must be encoded twice, as the SDK does)",
                14
            )
        );
    }

    #[test]
    fn encoded_comparisons_and_quotes_still_count() {
        assert_eq!(
            toks("a%3E=1"),
            vec![word("a"), Tok::Ge, word("1"), Tok::End]
        );
        assert_eq!(
            toks("eq(a,%27x,y%27)"),
            vec![
                word("eq"),
                Tok::LParen,
                word("a"),
                Tok::Comma,
                Tok::Quoted("x,y".to_owned()),
                Tok::RParen,
                Tok::End
            ]
        );
    }

    #[test]
    fn quotes_only_start_words() {
        assert_eq!(
            toks("a=O'Brien"),
            vec![word("a"), Tok::Eq, word("O'Brien"), Tok::End]
        );
        assert!(tokenize("eq(a,'open").is_err());
        assert_eq!(toks("''"), vec![Tok::Quoted(String::new()), Tok::End]);
    }

    #[test]
    fn bang_alone_is_data() {
        assert_eq!(
            toks("a=hi!"),
            vec![word("a"), Tok::Eq, word("hi!"), Tok::End]
        );
    }

    #[test]
    fn blank_and_invalid_input() {
        assert_eq!(toks(""), vec![Tok::End]);
        assert_eq!(toks("%20"), vec![Tok::End]);
        assert_eq!(tokenize("%FF%FE").unwrap_err(), RqlError::InvalidUtf8);
        assert!(tokenize("eq(a,%00)").is_err());
        assert!(matches!(
            tokenize(&"a".repeat(MAX_QUERY_BYTES + 1)),
            Err(RqlError::TooLong { .. })
        ));
        // Invalid escapes are data; multi-byte characters are fine.
        assert_eq!(
            toks("a=%zz%é"),
            vec![word("a"), Tok::Eq, word("%zz%é"), Tok::End]
        );
        assert_eq!(
            toks("a=%C3%A9"),
            vec![word("a"), Tok::Eq, word("é"), Tok::End]
        );
    }

    #[test]
    fn positions_are_raw_offsets() {
        let tokens = tokenize("a=%2541&b").unwrap();
        let positions: Vec<usize> = tokens.iter().map(|t| t.pos).collect();
        assert_eq!(positions, vec![1, 2, 3, 8, 9, 10]);
    }
}
