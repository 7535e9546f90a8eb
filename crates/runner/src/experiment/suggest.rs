//! "Did you mean": the valid name closest to a misspelt key or value.

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"),
/// the expected name closest to `x`, when it is close.
pub(crate) fn suggestion(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (given, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    candidates
        .into_iter()
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_valid_key_is_suggested() {
        let msg = "unknown field `corupted`, expected one of `name`, `concept`, `clean`, `corrupted`, `correct`";
        assert_eq!(suggestion(msg).as_deref(), Some("corrupted"));
        let msg = "unknown variant `resid_pr`, expected one of `resid_pre`, `resid_mid`";
        assert_eq!(suggestion(msg).as_deref(), Some("resid_pre"));
        assert_eq!(
            suggestion("unknown field `zzzzzz`, expected one of `name`"),
            None
        );
    }

    #[test]
    fn edit_distance_by_hand() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
