//! Durations as syncs reads them everywhere: rules options, the daemons'
//! flags and their INI files. One parser (humantime's: `500ms`, `5s`, `2m`,
//! `1h 30m`, `7d`), one message; a number alone is seconds.

use std::time::Duration;

/// A duration that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration ({reason}); write e.g. 500ms, 10s, 2m, 1h 30m or 7d")]
pub struct DurationError {
    text: String,
    reason: String,
}

/// Parses `s` (surrounding blanks ignored).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| DurationError {
                text: t.to_owned(),
                reason: e.to_string(),
            });
    }
    humantime::parse_duration(t).map_err(|e| DurationError {
        text: t.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("10", Duration::from_secs(10)),
            (" 2m ", Duration::from_secs(120)),
            ("1h 30m", Duration::from_secs(5400)),
            ("7d", Duration::from_secs(7 * 86_400)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn one_message_for_every_mistake() {
        for bad in ["", "5x", "ms", "-1s", "99999999999999999999999"] {
            let e = parse_duration(bad).expect_err(bad).to_string();
            assert!(
                e.contains("is not a duration") && e.contains("500ms"),
                "{bad}: {e}"
            );
        }
    }
}
