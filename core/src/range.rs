//! The `Range` request header, single byte ranges only (RFC 9110 §14.1.2).

/// A satisfiable byte range, `start..=end` inclusive, within a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` header asks of a blob of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The header is absent, malformed, or asks for several ranges: answer
    /// with the whole blob (a server may ignore a Range it does not support).
    Whole,
    Partial(ByteRange),
    /// Well formed but outside the blob: `416`.
    NotSatisfiable,
}

/// Interprets `header` against a blob of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let parse = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::NotSatisfiable,
            Some(n) if size == 0 => {
                let _ = n;
                RangeRequest::NotSatisfiable
            }
            Some(n) => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
            None => RangeRequest::Whole,
        },
        // bytes=N-: from N to the end.
        (false, true) => match parse(first) {
            Some(start) if start < size => RangeRequest::Partial(ByteRange {
                start,
                end: size - 1,
            }),
            Some(_) => RangeRequest::NotSatisfiable,
            None => RangeRequest::Whole,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start > end => RangeRequest::Whole,
            (Some(start), Some(_)) if start >= size => RangeRequest::NotSatisfiable,
            (Some(start), Some(end)) => RangeRequest::Partial(ByteRange {
                start,
                end: end.min(size - 1),
            }),
            _ => RangeRequest::Whole,
        },
        (true, true) => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn partial(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn single_ranges_are_understood() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), partial(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), partial(0, 99));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), partial(50, 99));
    }

    #[test]
    fn out_of_range_is_not_satisfiable() {
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            RangeRequest::NotSatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=100-200"), 100),
            RangeRequest::NotSatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 100),
            RangeRequest::NotSatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=0-0"), 0),
            RangeRequest::NotSatisfiable
        );
    }

    #[test]
    fn unsupported_or_malformed_means_whole() {
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(Some(h), 100), RangeRequest::Whole, "{h}");
        }
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
    }

    proptest! {
        #[test]
        fn partial_ranges_stay_inside_the_blob(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let RangeRequest::Partial(r) = parse_range(Some(&h), size) {
                prop_assert!(r.start <= r.end && r.end < size);
            }
        }
    }
}
