//! Pagination tokens of `/messages`: an opaque string naming a place in the room's
//! topological order, `t<depth>_<stream>`.
//!
//! A token names a gap between events: paginating backwards from it returns events strictly
//! before it, forwards returns events at or after it. So the `end` of one page, used as the
//! next `from`, neither repeats nor skips an event.

use std::fmt;

use axon_api::ApiError;

/// A position in the room's topological order (depth, then stream position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TopologicalToken {
    /// The event depth.
    pub(crate) depth: u64,
    /// The stream position, which orders events of equal depth.
    pub(crate) stream: u64,
}

impl TopologicalToken {
    /// Parses a token from a client, answering `M_INVALID_PARAM` for anything malformed.
    pub(crate) fn parse(token: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::invalid_param(format!("invalid pagination token: {token}"));
        let rest = token.strip_prefix('t').ok_or_else(invalid)?;
        let (depth, stream) = rest.split_once('_').ok_or_else(invalid)?;
        Ok(Self {
            depth: parse_number(depth).ok_or_else(invalid)?,
            stream: parse_number(stream).ok_or_else(invalid)?,
        })
    }
}

/// A plain decimal number: `u64::from_str` also accepts a leading `+`.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for TopologicalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}_{}", self.depth, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = TopologicalToken {
            depth: 12,
            stream: 345,
        };
        assert_eq!(token.to_string(), "t12_345");
        assert_eq!(TopologicalToken::parse("t12_345").unwrap(), token);
        assert_eq!(
            TopologicalToken::parse(&format!("t{}_0", u64::MAX))
                .unwrap()
                .depth,
            u64::MAX
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_params() {
        for bad in [
            "",
            "t",
            "t1",
            "t1_",
            "t_1",
            "12_34",
            "s12_34",
            "t+1_2",
            "t1_-2",
            "t1_2_3",
            "garbage",
            "t99999999999999999999_1",
        ] {
            let error = TopologicalToken::parse(bad).unwrap_err();
            assert_eq!(
                error.kind().errcode().to_string(),
                "M_INVALID_PARAM",
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_order_by_depth_then_stream() {
        let a = TopologicalToken::parse("t2_9").unwrap();
        let b = TopologicalToken::parse("t3_1").unwrap();
        let c = TopologicalToken::parse("t3_2").unwrap();
        assert!(a < b && b < c);
    }
}
