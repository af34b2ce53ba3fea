//! Just enough HTTP/1.1: read a request line and headers (bodies are not used by any route and
//! are skipped by `Content-Length`), write a response with a length.

use std::io::{BufRead, Read};

pub struct Request {
    pub path: String,
    pub keep_alive: bool,
}

/// Caps what one request may send, so a client cannot make a worker buffer without end.
const MAX_HEADER_LINES: usize = 100;

/// The next request, `None` when the client closed the connection.
pub fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (_method, path, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("/").to_string(),
        parts.next().unwrap_or("HTTP/1.0"),
    );
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0u64;
    for _ in 0..MAX_HEADER_LINES {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close")
                    && (keep_alive || value.eq_ignore_ascii_case("keep-alive"));
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    std::io::copy(&mut reader.take(content_length), &mut std::io::sink())?;
    Ok(Some(Request { path, keep_alive }))
}

pub fn response(status: u16, content_type: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_and_skips_its_body() {
        let raw = b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /healthz HTTP/1.0\r\n\r\n";
        let mut reader = std::io::BufReader::new(&raw[..]);
        let first = read_request(&mut reader).expect("read").expect("request");
        assert_eq!((first.path.as_str(), first.keep_alive), ("/x?y=1", true));
        let second = read_request(&mut reader).expect("read").expect("request");
        assert_eq!(
            (second.path.as_str(), second.keep_alive),
            ("/healthz", false)
        );
        assert!(read_request(&mut reader).expect("read").is_none());
    }
}
