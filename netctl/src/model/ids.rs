//! Identifiers: Docker's 64-hex IDs and their short form.

/// The first 12 characters of an ID, as Docker shows it.
pub fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}
