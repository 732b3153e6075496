//! Capture of a function process's stdout and stderr as timestamped log lines.
//!
//! Lines go into the buffer of the invocation that is running; at the end of an invocation
//! the invoker asks each reader to drain what the pipe already holds, so lines printed just
//! before the handler returned are not attributed to the next invocation.

use std::sync::{Arc, Mutex};

use common::db::text::storable_text;
use common::domain::LogLine;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Longest stored line; the rest of a longer line is cut.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most lines stored per invocation.
pub const MAX_LINES: usize = 10_000;

#[derive(Default)]
pub struct LogBuffer {
    lines: Vec<LogLine>,
    dropped: usize,
}

impl LogBuffer {
    fn push(&mut self, message: String) {
        if self.lines.len() >= MAX_LINES {
            self.dropped += 1;
            return;
        }
        self.lines.push(LogLine {
            message,
            timestamp: common::time::now(),
        });
    }

    /// The last lines, joined, to recognise why a process died.
    pub fn tail_text(&self, count: usize) -> String {
        let start = self.lines.len().saturating_sub(count);
        self.lines[start..]
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Takes the lines collected so far, with a note when some were dropped.
    pub fn take(&mut self) -> Vec<LogLine> {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                message: format!(
                    "[task service] {} more log lines were dropped: at most {MAX_LINES} lines are kept per task",
                    self.dropped
                ),
                timestamp: common::time::now(),
            });
            self.dropped = 0;
        }
        lines
    }
}

/// Collects both streams of one process.
#[derive(Default)]
pub struct OutputCapture {
    pub buffer: Arc<Mutex<LogBuffer>>,
    drains: Vec<mpsc::Sender<oneshot::Sender<()>>>,
}

impl OutputCapture {
    pub fn attach(&mut self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let (drain, requests) = mpsc::channel(1);
        self.drains.push(drain);
        tokio::spawn(read_lines(stream, self.buffer.clone(), requests));
    }

    /// Waits until every reader has consumed what its pipe holds now, then takes the lines.
    pub async fn collect(&self) -> Vec<LogLine> {
        for drain in &self.drains {
            let (done, wait) = oneshot::channel();
            if drain.send(done).await.is_ok() {
                let _ = wait.await;
            }
        }
        self.buffer.lock().map(|mut b| b.take()).unwrap_or_default()
    }
}

async fn read_lines(
    mut stream: impl AsyncRead + Unpin,
    buffer: Arc<Mutex<LogBuffer>>,
    mut drains: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut chunk = vec![0u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    let mut open = true;
    let push = |bytes: &[u8]| {
        let text = log_line(bytes);
        if let Ok(mut buffer) = buffer.lock() {
            buffer.push(text);
        }
    };
    loop {
        tokio::select! {
            biased;
            read = stream.read(&mut chunk), if open => match read {
                Ok(0) | Err(_) => {
                    open = false;
                    if !partial.is_empty() {
                        push(&partial);
                        partial.clear();
                    }
                }
                Ok(n) => {
                    for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
                        let complete = piece.ends_with(b"\n");
                        let piece = piece.strip_suffix(b"\n").unwrap_or(piece);
                        let room = MAX_LINE_BYTES.saturating_sub(partial.len());
                        partial.extend_from_slice(&piece[..piece.len().min(room)]);
                        if complete {
                            push(&partial);
                            partial.clear();
                        }
                    }
                }
            },
            request = drains.recv() => match request {
                Some(done) => {
                    if !partial.is_empty() {
                        push(&partial);
                        partial.clear();
                    }
                    let _ = done.send(());
                }
                None => return,
            },
        }
    }
}

/// One output line as stored: valid UTF-8 without its carriage return, and without NUL,
/// which Postgres text cannot hold (a single NUL would fail the whole transaction that stores
/// the attempt's outcome with its logs).
fn log_line(bytes: &[u8]) -> String {
    storable_text(String::from_utf8_lossy(bytes).trim_end_matches('\r')).into_owned()
}

#[cfg(test)]
mod tests {
    use super::log_line;

    #[test]
    fn a_stored_line_has_no_nul_nor_carriage_return() {
        assert_eq!(log_line(b"a\0b\r"), "a\u{FFFD}b");
        assert_eq!(log_line(b"\xff ok"), "\u{FFFD} ok");
    }
}
