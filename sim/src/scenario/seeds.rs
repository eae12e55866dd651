//! `--seeds`: which seeds a sweep runs. A range includes both ends, whether written `A..B` or
//! `A..=B`, so `--seeds 1..20` runs seeds 1 to 20, twenty of them (as the shell's `{1..20}` does);
//! a half-open reading made `1..20` look like a sweep that lost a seed. The summary line of a run
//! names the range the same way ([`SeedRange`]'s `Display`: `seeds 1..=20 (20 seeds, both ends
//! included)`).

use std::fmt;

/// An inclusive range of seeds, `first..=last`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    pub last: u64,
}

/// Why `--seeds` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedsError {
    #[error("--seeds {0:?}: expected A..B or A..=B (both include B), e.g. 1..20 for seeds 1 to 20")]
    Shape(String),
    #[error("--seeds {range:?}: {part:?} is not a seed (a number from 0 to 18446744073709551615)")]
    Number { range: String, part: String },
    #[error("--seeds {range:?} is empty: {first} comes after {last} (both ends are included, so {first}..{first} is one seed)")]
    Empty { range: String, first: u64, last: u64 },
}

impl SeedRange {
    /// One seed.
    pub fn single(seed: u64) -> SeedRange {
        SeedRange { first: seed, last: seed }
    }

    /// `A..B` or `A..=B`, both meaning A to B with B included; spaces around the numbers allowed.
    pub fn parse(range: &str) -> Result<SeedRange, SeedsError> {
        let (low, high) = range
            .split_once("..=")
            .or_else(|| range.split_once(".."))
            .ok_or_else(|| SeedsError::Shape(range.to_string()))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| SeedsError::Number { range: range.to_string(), part: part.to_string() })
        };
        let (first, last) = (number(low)?, number(high)?);
        if first > last {
            return Err(SeedsError::Empty { range: range.to_string(), first, last });
        }
        Ok(SeedRange { first, last })
    }

    /// How many seeds: `last - first + 1` (saturating: `0..=u64::MAX` has one more than a u64).
    pub fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never: a range holds at least its first seed.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> {
        self.first..=self.last
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "seed {}", self.first)
        } else {
            write!(f, "seeds {}..={} ({} seeds, both ends included)", self.first, self.last, self.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_include_the_last_seed() {
        for text in ["1..20", "1..=20", " 1 ..= 20 "] {
            let range = SeedRange::parse(text).unwrap();
            assert_eq!(range, SeedRange { first: 1, last: 20 }, "{text}");
            assert_eq!(range.len(), 20);
            assert_eq!(range.iter().collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
        }
        assert_eq!(SeedRange::parse("7..7").unwrap().iter().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn the_summary_names_the_seeds_that_ran() {
        assert_eq!(SeedRange::parse("1..20").unwrap().to_string(), "seeds 1..=20 (20 seeds, both ends included)");
        assert_eq!(SeedRange::single(3).to_string(), "seed 3");
        assert_eq!(SeedRange::parse("5..5").unwrap().to_string(), "seed 5");
    }

    #[test]
    fn bad_ranges_say_why() {
        assert_eq!(SeedRange::parse("1-20"), Err(SeedsError::Shape("1-20".into())));
        let err = SeedRange::parse("1..x").unwrap_err().to_string();
        assert!(err.contains("\"x\" is not a seed"), "{err}");
        let err = SeedRange::parse("20..1").unwrap_err().to_string();
        assert!(err.contains("is empty: 20 comes after 1"), "{err}");
        assert!(SeedRange::parse("..3").is_err());
        assert!(SeedRange::parse("-1..3").is_err());
    }

    #[test]
    fn the_widest_range_does_not_overflow() {
        assert_eq!(SeedRange::parse("0..18446744073709551615").unwrap().len(), u64::MAX);
    }
}
