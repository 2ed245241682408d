//! The little HTTP/1.1 the plugin API needs: dockerd POSTs JSON to `/Method.Name` on a unix
//! socket (keep-alive) and reads JSON back. A thread per connection; requests are small.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The largest request body taken (dockerd's are a few KiB).
const MAX_BODY: usize = 1 << 20;
/// The longest request or header line, and the most header lines, taken.
const MAX_LINE: u64 = 8 << 10;
const MAX_HEADERS: usize = 100;

/// One line, at most [`MAX_LINE`] bytes: a longer one is an error, not a growing buffer.
fn read_line(r: &mut impl BufRead, line: &mut String) -> Result<usize> {
    let n = r.by_ref().take(MAX_LINE).read_line(line)?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        bail!("a request line longer than {MAX_LINE} bytes");
    }
    Ok(n)
}

pub struct Request {
    pub path: String,
    pub body: Value,
}

/// Serves one connection until dockerd closes it. `handle` answers a request: Ok(JSON) is a
/// 200, Err(message) a 500 with `{"Err": message}` (the API's error shape).
pub fn serve(stream: UnixStream, handle: &dyn Fn(&Request) -> std::result::Result<Value, String>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    while let Ok(Some(req)) = read_request(&mut reader) {
        let (status, body) = match handle(&req) {
            Ok(v) => ("200 OK", v),
            Err(e) => ("500 Internal Server Error", serde_json::json!({ "Err": e })),
        };
        let body = body.to_string();
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// One request; None when the peer closed the connection between requests.
pub fn read_request(r: &mut impl BufRead) -> Result<Option<Request>> {
    let mut line = String::new();
    if read_line(r, &mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(_method), Some(path)) = (parts.next(), parts.next()) else {
        bail!("malformed request line {line:?}");
    };
    let path = path.to_string();
    let mut len = 0usize;
    for n in 0.. {
        if n == MAX_HEADERS {
            bail!("more than {MAX_HEADERS} header lines");
        }
        let mut h = String::new();
        if read_line(r, &mut h)? == 0 {
            bail!("connection closed in the headers");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().context("Content-Length")?;
            }
        }
    }
    if len > MAX_BODY {
        bail!("request body of {len} bytes is too large");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Ok(Some(Request { path, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_and_without_bodies() {
        let raw = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n\
                    POST /NetworkDriver.CreateNetwork HTTP/1.1\r\ncontent-length: 17\r\n\r\n{\"NetworkID\":\"n\"}";
        let mut r = BufReader::new(&raw[..]);
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(a.path, "/Plugin.Activate");
        assert_eq!(a.body, Value::Null);
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.path, "/NetworkDriver.CreateNetwork");
        assert_eq!(b.body["NetworkID"], "n");
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn endless_lines_and_headers_are_refused() {
        let long = format!("POST /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
        assert!(read_request(&mut BufReader::new(long.as_bytes())).is_err());
        let many = format!("POST /x HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200));
        assert!(read_request(&mut BufReader::new(many.as_bytes())).is_err());
    }
}
