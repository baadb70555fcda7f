//! Errors of ISO reading and boot discovery.

use std::io;

/// Everything that can go wrong reading an ISO image or its boot configuration.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// Host I/O on the image failed.
    #[error("reading {what} of ISO image {image}: {source}")]
    Io {
        /// Image path (or a description of an in-memory image).
        image: String,
        /// What was being read.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The image is not ISO 9660 or one of its structures is invalid.
    #[error("ISO image {image} is corrupt: {reason}")]
    Corrupt {
        /// Image path.
        image: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// The image uses an ISO 9660 feature this reader does not implement.
    #[error("ISO image {image} is unsupported: {reason}")]
    Unsupported {
        /// Image path.
        image: String,
        /// The feature.
        reason: String,
    },
    /// A path does not exist on the image.
    #[error("{path} not found on ISO image {image}")]
    NotFound {
        /// Image path.
        image: String,
        /// Path inside the image.
        path: String,
    },
    /// A file is larger than the caller allowed.
    #[error("{path} on ISO image {image} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Image path.
        image: String,
        /// Path inside the image.
        path: String,
        /// Size of the file.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// No bootable installer entry was found (or the requested one does not exist).
    #[error("no installer boot entry on ISO image {image}: {reason}")]
    NoBootEntry {
        /// Image path.
        image: String,
        /// What was looked for and what exists; says how to choose with --boot-entry.
        reason: String,
    },
}

/// Result of ISO operations.
pub type Result<T> = std::result::Result<T, IsoError>;
