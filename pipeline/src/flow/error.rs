//! The flow language's one error type: where (1-based line and column) and what.

/// A rejected flow. `Display` prints `LINE:COL: message`; callers that read files prefix the
/// file name (`FILE:LINE:COL: message`), like compilers do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct FlowParseError {
    /// 1-based line within the parsed text.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub col: usize,
    pub message: String,
}
