//! The plugin socket's HTTP/1.1 as dockerd speaks it (keep-alive: requests back to back).
//! Whatever arrives, reading ends in a request, a clean close or an error, and a request's
//! path is one word.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use netctl::docker::http::read_request;

fuzz_target!(|data: &[u8]| {
    let mut r = BufReader::new(data);
    // Every request consumes at least its request line: no more requests than bytes.
    for _ in 0..=data.len() {
        match read_request(&mut r) {
            Ok(Some(req)) => {
                assert!(!req.path.is_empty() && !req.path.contains(char::is_whitespace));
            }
            Ok(None) | Err(_) => return,
        }
    }
    panic!("more requests than bytes");
});
