//! Tokens → syntax tree, with no knowledge of what operators mean (that is `interpret`'s job).
//!
//! Grammar (`&` binds tighter than `|`, as `;` does over `,` in FIQL):
//!
//! ```text
//! query  := chain End
//! chain  := term (('&' | '|') term)*
//! term   := '(' chain ')' | WORD '(' args ')' | WORD cmp value
//! args   := [arg (',' arg)*]
//! arg    := '(' chain ')'          -- when the parenthesis opens an expression
//!         | '(' values ')'         -- an array value: in(f,(a,b))
//!         | WORD '(' args ')' [chain tail] | WORD cmp value [chain tail]
//!         | WORD | QUOTED | <nothing>
//! cmp    := '=' | '==' | '!=' | '<' | '<=' | '>' | '>=' | '=' WORD '='
//! ```
//!
//! Every opening parenthesis counts one level against [`MAX_DEPTH`], and the recursion follows
//! the parentheses, so the depth limit also bounds the stack.

use super::MAX_DEPTH;
use super::error::RqlError;
use super::lexer::{Tok, Token};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// `name(args)`; `&`/`|` chains become calls of `and`/`or`, FIQL comparisons calls of their
    /// operator.
    Call {
        name: String,
        args: Vec<Node>,
        pos: usize,
    },
    /// A word or quoted string, decoded once.
    Value {
        text: String,
        quoted: bool,
        pos: usize,
    },
    /// `(a,b,…)`: only [`Node::Value`] items.
    Array { items: Vec<Node>, pos: usize },
}

/// Parses the tokens of a whole query; `None` for a blank one.
pub(super) fn parse_tokens(tokens: &[Token]) -> Result<Option<Node>, RqlError> {
    let mut parser = Parser { tokens, at: 0 };
    if parser.peek() == &Tok::End {
        return Ok(None);
    }
    let first = parser.term(0)?;
    let node = parser.chain(first, 0)?;
    if parser.peek() != &Tok::End {
        return Err(parser.unexpected());
    }
    Ok(Some(node))
}

struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
}

const END: Token = Token {
    tok: Tok::End,
    pos: 0,
};

impl Parser<'_> {
    fn token(&self, offset: usize) -> &Token {
        // The lexer always ends the list with `End`; past it, keep answering `End`.
        self.tokens
            .get(self.at + offset)
            .or_else(|| self.tokens.last())
            .unwrap_or(&END)
    }

    fn peek(&self) -> &Tok {
        &self.token(0).tok
    }

    fn pos(&self) -> usize {
        self.token(0).pos
    }

    fn advance(&mut self) {
        if self.at < self.tokens.len() {
            self.at += 1;
        }
    }

    fn unexpected(&self) -> RqlError {
        RqlError::syntax(format!("unexpected {}", self.peek().describe()), self.pos())
    }

    fn expect_close(&mut self) -> Result<(), RqlError> {
        if self.peek() == &Tok::RParen {
            self.advance();
            Ok(())
        } else {
            Err(RqlError::syntax(
                format!("expected `)`, found {}", self.peek().describe()),
                self.pos(),
            ))
        }
    }

    /// Consumes a `(` one level deeper than `depth`, refusing to go past [`MAX_DEPTH`].
    fn open(&mut self, depth: usize) -> Result<usize, RqlError> {
        let inner = depth + 1;
        if inner > MAX_DEPTH {
            return Err(RqlError::TooDeep { max: MAX_DEPTH });
        }
        self.advance();
        Ok(inner)
    }

    /// Continues `first` with `&`/`|` terms; `&` groups before `|`.
    fn chain(&mut self, first: Node, depth: usize) -> Result<Node, RqlError> {
        let pos = node_pos(&first);
        let mut alternatives = Vec::new();
        let mut conjunction = vec![first];
        loop {
            match self.peek() {
                Tok::And => {
                    self.advance();
                    conjunction.push(self.term(depth)?);
                }
                Tok::Or => {
                    self.advance();
                    alternatives.push(combine("and", std::mem::take(&mut conjunction), pos));
                    conjunction.push(self.term(depth)?);
                }
                _ => break,
            }
        }
        alternatives.push(combine("and", conjunction, pos));
        Ok(combine("or", alternatives, pos))
    }

    /// An expression: a parenthesized chain, a call or a FIQL comparison.
    fn term(&mut self, depth: usize) -> Result<Node, RqlError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::LParen => self.group(depth),
            Tok::Word(name) => {
                self.advance();
                match self.peek() {
                    Tok::LParen => self.call(name, pos, depth),
                    tok if is_comparison(tok) => self.comparison(name, pos, depth),
                    other => Err(RqlError::syntax(
                        format!(
                            "expected `(` or a comparison after `{}`, found {}",
                            super::error::quote(&name),
                            other.describe()
                        ),
                        self.pos(),
                    )),
                }
            }
            other => Err(RqlError::syntax(
                format!(
                    "expected an operator such as eq(field,value), found {}",
                    other.describe()
                ),
                pos,
            )),
        }
    }

    fn group(&mut self, depth: usize) -> Result<Node, RqlError> {
        let inner = self.open(depth)?;
        let first = self.term(inner)?;
        let node = self.chain(first, inner)?;
        self.expect_close()?;
        Ok(node)
    }

    fn call(&mut self, name: String, pos: usize, depth: usize) -> Result<Node, RqlError> {
        let inner = self.open(depth)?;
        let mut args = Vec::new();
        if self.peek() != &Tok::RParen {
            loop {
                args.push(self.arg(inner)?);
                if self.peek() == &Tok::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        self.expect_close()?;
        Ok(Node::Call { name, args, pos })
    }

    fn arg(&mut self, depth: usize) -> Result<Node, RqlError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::LParen if self.opens_expression() => {
                let group = self.group(depth)?;
                self.chain(group, depth)
            }
            Tok::LParen => self.array(depth),
            Tok::Quoted(text) => {
                self.advance();
                Ok(Node::Value {
                    text,
                    quoted: true,
                    pos,
                })
            }
            Tok::Word(text) => {
                self.advance();
                let expression = match self.peek() {
                    Tok::LParen => self.call(text, pos, depth)?,
                    tok if is_comparison(tok) => self.comparison(text, pos, depth)?,
                    _ => {
                        return Ok(Node::Value {
                            text,
                            quoted: false,
                            pos,
                        });
                    }
                };
                self.chain(expression, depth)
            }
            // `eq(name,)`: an empty value.
            Tok::Comma | Tok::RParen => Ok(Node::Value {
                text: String::new(),
                quoted: false,
                pos,
            }),
            _ => Err(self.unexpected()),
        }
    }

    /// Whether the `(` at hand opens an expression (`(eq(a,b)|…)`, `(a=1|…)`, `((…))`) rather
    /// than an array of values.
    fn opens_expression(&self) -> bool {
        match (&self.token(1).tok, &self.token(2).tok) {
            (Tok::LParen, _) => true,
            (Tok::Word(_), next) => next == &Tok::LParen || is_comparison(next),
            _ => false,
        }
    }

    /// `(a,b,…)`: values only.
    fn array(&mut self, depth: usize) -> Result<Node, RqlError> {
        let pos = self.pos();
        self.open(depth)?;
        let mut items = Vec::new();
        if self.peek() != &Tok::RParen {
            loop {
                let item_pos = self.pos();
                let (text, quoted) = match self.peek().clone() {
                    Tok::Word(text) => (text, false),
                    Tok::Quoted(text) => (text, true),
                    Tok::Comma | Tok::RParen => (String::new(), false),
                    _ => return Err(self.unexpected()),
                };
                if matches!(self.peek(), Tok::Word(_) | Tok::Quoted(_)) {
                    self.advance();
                }
                items.push(Node::Value {
                    text,
                    quoted,
                    pos: item_pos,
                });
                if self.peek() == &Tok::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        self.expect_close()?;
        Ok(Node::Array { items, pos })
    }

    /// `field <cmp> value` after the field word: `=`, `==`, `!=`, `<`, `<=`, `>`, `>=` or
    /// `=op=` (`priority=ge=3`).
    fn comparison(&mut self, field: String, pos: usize, depth: usize) -> Result<Node, RqlError> {
        let operator = match self.peek().clone() {
            Tok::Eq => {
                self.advance();
                match (self.peek().clone(), &self.token(1).tok) {
                    (Tok::Word(op), Tok::Eq)
                        if !op.is_empty() && op.chars().all(|c| c.is_ascii_alphabetic()) =>
                    {
                        self.advance();
                        self.advance();
                        op
                    }
                    _ => "eq".to_owned(),
                }
            }
            Tok::EqEq => self.take_operator("eq"),
            Tok::NotEq => self.take_operator("ne"),
            Tok::Lt => self.take_operator("lt"),
            Tok::Le => self.take_operator("le"),
            Tok::Gt => self.take_operator("gt"),
            Tok::Ge => self.take_operator("ge"),
            _ => return Err(self.unexpected()),
        };
        let value_pos = self.pos();
        let value = match self.peek().clone() {
            Tok::LParen => self.array(depth)?,
            Tok::Word(text) => {
                self.advance();
                Node::Value {
                    text,
                    quoted: false,
                    pos: value_pos,
                }
            }
            Tok::Quoted(text) => {
                self.advance();
                Node::Value {
                    text,
                    quoted: true,
                    pos: value_pos,
                }
            }
            // `a=` then `&`, `)` or the end: an empty value.
            _ => Node::Value {
                text: String::new(),
                quoted: false,
                pos: value_pos,
            },
        };
        let field = Node::Value {
            text: field,
            quoted: false,
            pos,
        };
        Ok(Node::Call {
            name: operator,
            args: vec![field, value],
            pos,
        })
    }

    fn take_operator(&mut self, name: &str) -> String {
        self.advance();
        name.to_owned()
    }
}

fn is_comparison(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Eq | Tok::EqEq | Tok::NotEq | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
    )
}

fn node_pos(node: &Node) -> usize {
    match node {
        Node::Call { pos, .. } | Node::Value { pos, .. } | Node::Array { pos, .. } => *pos,
    }
}

/// One node stays itself; several become a call of `name`.
fn combine(name: &str, mut nodes: Vec<Node>, pos: usize) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    Node::Call {
        name: name.to_owned(),
        args: nodes,
        pos,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn tree(raw: &str) -> Result<Option<Node>, RqlError> {
        parse_tokens(&tokenize(raw)?)
    }

    /// The tree as compact text, for readable assertions.
    fn show(node: &Node) -> String {
        match node {
            Node::Call { name, args, .. } => {
                let args: Vec<String> = args.iter().map(show).collect();
                format!("{name}({})", args.join(","))
            }
            Node::Value { text, quoted, .. } if *quoted => format!("'{text}'"),
            Node::Value { text, .. } => text.clone(),
            Node::Array { items, .. } => {
                let items: Vec<String> = items.iter().map(show).collect();
                format!("[{}]", items.join(","))
            }
        }
    }

    fn shown(raw: &str) -> String {
        show(&tree(raw).unwrap().unwrap())
    }

    #[test]
    fn calls_chains_and_precedence() {
        assert_eq!(shown("eq(a,b)"), "eq(a,b)");
        assert_eq!(shown("eq(a,b)&eq(c,d)"), "and(eq(a,b),eq(c,d))");
        assert_eq!(shown("a=1|b=2&c=3"), "or(eq(a,1),and(eq(b,2),eq(c,3)))");
        assert_eq!(shown("(a=1|b=2)&c=3"), "and(or(eq(a,1),eq(b,2)),eq(c,3))");
        assert_eq!(
            shown("and(a=1|b=2,c=3)"),
            "and(or(eq(a,1),eq(b,2)),eq(c,3))"
        );
        assert_eq!(
            shown("or((a=1&b=2),eq(c,3))"),
            "or(and(eq(a,1),eq(b,2)),eq(c,3))"
        );
        assert_eq!(shown("skipCount()"), "skipCount()");
    }

    #[test]
    fn fiql_forms() {
        assert_eq!(shown("a=1"), "eq(a,1)");
        assert_eq!(shown("a==1"), "eq(a,1)");
        assert_eq!(shown("a!=1"), "ne(a,1)");
        assert_eq!(shown("a<1"), "lt(a,1)");
        assert_eq!(shown("a<=1"), "le(a,1)");
        assert_eq!(shown("a>1"), "gt(a,1)");
        assert_eq!(shown("a>=1"), "ge(a,1)");
        assert_eq!(shown("a=ge=1"), "ge(a,1)");
        assert_eq!(shown("a=in=(1,2)"), "in(a,[1,2])");
        assert_eq!(shown("a="), "eq(a,)");
        assert_eq!(shown("a='x y'"), "eq(a,'x y')");
    }

    #[test]
    fn arrays_and_empty_values() {
        assert_eq!(shown("in(f,(a,b))"), "in(f,[a,b])");
        assert_eq!(shown("in(f,())"), "in(f,[])");
        assert_eq!(shown("in(f,(a,,'c'))"), "in(f,[a,,'c'])");
        assert_eq!(shown("eq(f,)"), "eq(f,)");
        assert_eq!(shown("in(f,,)"), "in(f,,)");
    }

    #[test]
    fn blank_query_is_none() {
        assert_eq!(tree("").unwrap(), None);
    }

    #[test]
    fn syntax_errors_say_where() {
        assert_eq!(
            tree("eq(status,new").unwrap_err().to_string(),
            "expected `)`, found the end of the query at position 14"
        );
        assert_eq!(
            tree("eq(a,b))").unwrap_err().to_string(),
            "unexpected `)` at position 8"
        );
        assert!(tree("foo").is_err());
        assert!(tree("&a=1").is_err());
        assert!(tree("a=1&").is_err());
        assert!(tree("in(f,(a,(b)))").is_err());
        assert!(tree("(a,b)").is_err());
        assert!(tree("eq(a,b)c").is_err());
    }

    #[test]
    fn depth_is_limited() {
        let ok = format!(
            "{}eq(a,b){}",
            "and(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(tree(&ok).is_ok());
        let deep = format!(
            "{}eq(a,b){}",
            "and(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert_eq!(
            tree(&deep).unwrap_err(),
            RqlError::TooDeep { max: MAX_DEPTH }
        );
        let groups = format!("{}eq(a,b){}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            tree(&groups).unwrap_err(),
            RqlError::TooDeep { max: MAX_DEPTH }
        );
        // Unbalanced and deep: still an error, never a stack overflow.
        assert!(tree(&"(".repeat(5000)).is_err());
        assert!(tree(&"a(".repeat(4000)).is_err());
    }
}
