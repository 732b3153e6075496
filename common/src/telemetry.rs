//! Log output through `tracing-subscriber`: human-readable on a terminal, JSON when configured.

use std::fmt::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatFields};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Calling it twice (tests start several apps in one process) keeps the first subscriber.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_installed = match config.format {
        LogFormat::Pretty => builder.fmt_fields(escaped_fields()).try_init(),
        // JSON strings escape control characters already.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Fields of the human format, as the default writes them but with control characters
/// escaped. Field values come from outside (event ids, function names, other systems' error
/// messages): a newline in one would start a line that a reader, or a log shipper, takes for
/// one of the service's own.
fn escaped_fields() -> impl for<'writer> FormatFields<'writer> + 'static {
    format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            if writer.has_ansi_escapes() {
                write!(writer, "\x1b[3m{}\x1b[0m\x1b[2m=\x1b[0m", field.name())?;
            } else {
                write!(writer, "{}=", field.name())?;
            }
        }
        write!(Escaping(writer), "{value:?}")
    })
    .delimited(" ")
}

/// Writes through to `W`, each control character as its escape (`\n`, `\u{1b}`).
struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write_str(&mut self, mut text: &str) -> fmt::Result {
        while let Some(at) = text.find(char::is_control) {
            let (clean, rest) = text.split_at(at);
            self.0.write_str(clean)?;
            let mut chars = rest.chars();
            if let Some(control) = chars.next() {
                write!(self.0, "{}", control.escape_debug())?;
            }
            text = chars.as_str();
        }
        self.0.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let mut written = String::new();
        Escaping(&mut written)
            .write_str("evt\nFORGED line\r\u{1b}[31m\ttab é")
            .unwrap();
        assert_eq!(written, "evt\\nFORGED line\\r\\u{1b}[31m\\ttab é");
    }
}
