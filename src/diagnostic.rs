//! Errors found while loading the config or a list file, located by file, line and column so an
//! admin can go straight to the mistake. Loading collects every error it can instead of stopping at
//! the first, so `hushd check` (and a rejected reload) reports them all at once.

use std::{fmt, io, ops::Range, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl LoadError {
    /// An error at byte `span` of `text`, the contents of `path`.
    pub fn at(
        path: &std::path::Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, span.start);
        Self::At {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A TOML syntax or shape error, located where the `toml` crate says it is.
    pub fn toml(path: &std::path::Path, text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        match err.span() {
            Some(span) => Self::at(path, text, span, message),
            None => Self::File {
                path: path.to_path_buf(),
                message,
            },
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Every error of one load, in the order found.
#[derive(Debug, Default)]
pub struct LoadErrors(pub Vec<LoadError>);

impl std::error::Error for LoadErrors {}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<LoadError> for LoadErrors {
    fn from(e: LoadError) -> Self {
        Self(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters: columns count characters
        assert_eq!(line_column(text, 6 + "bé = ".len()), (2, 6));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }
}
