//! Identifiers: Docker's 64-hex IDs and their short form.

/// The first 12 characters of an ID, as Docker shows it (cut on a character boundary: an ID
/// from outside may hold anything).
pub fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_ids_cut_on_characters() {
        assert_eq!(short(&"a".repeat(64)), "a".repeat(12));
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("aaaaaaaaaaa\u{e9}bbbb"), "aaaaaaaaaaa\u{e9}");
    }
}
