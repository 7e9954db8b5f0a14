//! "Did you mean": the known name closest to a misspelt one.

/// The known name closest to `name`, if it is close enough to be a typo.
pub(super) fn closest<'n>(name: &str, known: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// " (did you mean `x`?)" when a known name is close.
pub(super) fn suggest<'n>(name: &str, known: impl Iterator<Item = &'n str>) -> String {
    closest(name, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("replcia", ["replica", "docs"].into_iter()),
            " (did you mean `replica`?)"
        );
        assert_eq!(suggest("zzz", ["replica"].into_iter()), "");
    }

    #[test]
    fn distances_count_characters_not_bytes() {
        for (a, b, d) in [
            ("", "", 0),
            ("", "abc", 3),
            ("kitten", "sitting", 3),
            ("replcia", "replica", 2),
            ("flaw", "lawn", 2),
            ("中文", "中", 1),
            ("café", "cafe", 1),
        ] {
            assert_eq!(strsim::levenshtein(a, b), d, "{a} / {b}");
        }
    }

    #[test]
    fn closest_keeps_its_threshold_and_the_first_of_equals() {
        let known = ["docs", "dogs", "replica", "replicas"];
        assert_eq!(closest("doc", known.into_iter()), Some("docs"));
        assert_eq!(closest("replicaa", known.into_iter()), Some("replica"));
        assert_eq!(closest("xyzw", known.into_iter()), None);
        // Two edits allowed for short names, a third of the name's length
        // for long ones.
        assert_eq!(closest("daks", known.into_iter()), Some("docs"));
        assert_eq!(closest("dxxx", known.into_iter()), None);
    }
}
