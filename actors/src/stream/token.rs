//! Resume tokens: where a reader stands in a topic, as the next offset of every partition.
//!
//! The text form is the offsets in partition order joined by `.` (`"124"` for a one-partition
//! topic, `"124.57.90"` for three). It names broker positions only, so any node reading the
//! same broker resumes from it. Clients treat it as opaque.

use std::fmt::Write;

/// Most partitions a token may name.
pub const MAX_PARTITIONS: usize = 10_000;

/// Formats `positions` (next offset per partition) as a token.
pub fn format(positions: &[u64]) -> String {
    let mut out = String::with_capacity(positions.len() * 8);
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let _ = write!(out, "{p}");
    }
    out
}

/// Parses a token into next offsets per partition.
pub fn parse(token: &str) -> Result<Vec<u64>, &'static str> {
    if token.is_empty() {
        return Err("an empty resume token");
    }
    let mut out = Vec::new();
    for part in token.split('.') {
        if out.len() == MAX_PARTITIONS {
            return Err("a resume token names at most 10000 partitions");
        }
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a resume token is offsets (digits) joined by `.`");
        }
        out.push(part.parse().map_err(|_| "an offset out of range")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for positions in [vec![0], vec![124], vec![124, 57, 90], vec![u64::MAX, 0]] {
            assert_eq!(parse(&format(&positions)).unwrap(), positions);
        }
        assert_eq!(format(&[124, 57, 90]), "124.57.90");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "a",
            "1.b",
            "-1",
            "1 2",
            "18446744073709551616",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A client's resume token is parsed or refused, never a panic.
        #[test]
        fn arbitrary_tokens_never_panic(token in "\\PC{0,64}", dotted in "[0-9.]{0,40}") {
            let _ = parse(&token);
            let _ = parse(&dotted);
        }

        /// What the gateway hands out reads back as it was.
        #[test]
        fn tokens_round_trip(offsets in proptest::collection::vec(any::<u64>(), 1..20)) {
            let token = offsets
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".");
            prop_assert_eq!(parse(&token).unwrap(), offsets);
        }
    }
}
