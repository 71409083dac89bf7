//! An error and its causes as one line for a person.
//!
//! Library errors wrap their causes (`source()`), and many also print the
//! cause in their own message (`"{context}: {source}"`), so walking the
//! chain naively repeats text. [`render_chain`] walks it and leaves out a
//! cause already said, keeping the root cause, which is usually the one
//! that tells what to fix ("Connection refused", "certificate not trusted").

use std::error::Error;

/// `error: cause: cause…`, each cause once: a cause whose text the line
/// already holds is left out.
pub fn render_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !next.is_empty() && !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Test {
        #[error("reading {path}: {source}")]
        Quoting {
            path: &'static str,
            #[source]
            source: std::io::Error,
        },
        #[error("request failed")]
        Wrapping(#[source] Box<Test>),
        #[error("{0}")]
        Transparent(#[source] std::io::Error),
    }

    #[test]
    fn every_cause_appears_once_root_last() {
        let root = || std::io::Error::other("connection refused");
        let quoting = Test::Quoting {
            path: "/x",
            source: root(),
        };
        assert_eq!(render_chain(&quoting), "reading /x: connection refused");
        let wrapped = Test::Wrapping(Box::new(quoting));
        assert_eq!(
            render_chain(&wrapped),
            "request failed: reading /x: connection refused"
        );
        let transparent = Test::Wrapping(Box::new(Test::Transparent(root())));
        assert_eq!(
            render_chain(&transparent),
            "request failed: connection refused"
        );
    }

    #[test]
    fn an_error_without_causes_is_its_message() {
        assert_eq!(
            render_chain(&std::io::Error::other("disk full")),
            "disk full"
        );
    }
}
