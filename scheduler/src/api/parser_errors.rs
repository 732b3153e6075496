//! The error body for requests hyper's parser refuses itself.
//!
//! A request whose head is not HTTP (a raw `"` or `<` in the query, a header name with a
//! space), whose target is too long or whose head has too many fields never reaches a
//! handler: hyper writes a bare `400`, `414` or `431` (`content-length: 0`, `date` and
//! `connection: close`, nothing else) and closes the connection. Every answer of the API
//! carries the Extra Horizon error body, so the connection's writer recognises exactly that
//! bare head and writes the same status with the body in its place. No response of the service's own has that shape: its
//! errors carry a body and a content type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::error::ApiError;

/// A connection whose bare parser errors are given their body.
pub struct WithErrorBodies<S> {
    inner: S,
    /// The answer being written in place of a bare head: its bytes, how many are written,
    /// and the length of the head it stands for (what the caller is told was written).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> WithErrorBodies<S> {
    pub fn new(inner: S) -> Self {
        WithErrorBodies {
            inner,
            replacing: None,
        }
    }
}

/// The whole answer standing in for `head`, when `head` is a bare error head of hyper's.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let mut date = None;
    let mut bare = false;
    for field in lines {
        match field {
            "content-length: 0" => bare = true,
            "connection: close" => {}
            _ if field.starts_with("date: ") && date.is_none() => date = Some(field),
            _ => return None,
        }
    }
    let date = date.filter(|_| bare)?;
    let error = match status.split(' ').next()? {
        "400" => ApiError::MalformedRequest,
        "414" => ApiError::UriTooLong(crate::api::MAX_URI_BYTES),
        "431" => ApiError::HeadersTooLarge(crate::api::MAX_HEADER_BYTES),
        _ => return None,
    };
    let body = serde_json::to_string(&error.body()).ok()?;
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n{date}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> WithErrorBodies<S> {
    /// Writes what is left of the replacement; ready with the replaced head's length.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, stands_for)) = &mut self.replacing {
            if *written == bytes.len() {
                let stands_for = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(stands_for));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WithErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WithErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            match replacement_for(buf) {
                Some(bytes) => self.replacing = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_replacing(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A bare head comes alone; anything else goes through as it is.
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && (self.replacing.is_some() || replacement_for(only).is_some())
        {
            return self.poll_write(cx, only);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sun, 06 Dec 2026 02:00:00 GMT";

    #[test]
    fn a_bare_parser_error_gets_the_error_body() {
        let bare = format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
        let answer = String::from_utf8(replacement_for(bare.as_bytes()).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], 26, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("percent-encode"),
            "{body}"
        );
        let bare = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n{DATE}\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(replacement_for(bare.as_bytes()).is_some());
    }

    #[test]
    fn responses_of_the_service_pass_unchanged() {
        for other in [
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
            ),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n{DATE}\r\n\r\n{{}}"),
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            "{\"code\": 400}".to_owned(),
        ] {
            assert!(replacement_for(other.as_bytes()).is_none(), "{other}");
        }
    }
}
