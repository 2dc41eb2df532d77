//! One error type for the library. Each variant says whether a retry can help
//! ([`Error::is_retryable`]): retryable errors fail the SQS record so it is redelivered;
//! the others are logged and acknowledged, since a retry would fail the same way.

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in a zone transition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream list (`crate::streams`) names a column its table does not have.
    #[error("stream list: {0}")]
    Declaration(String),
    /// The invocation payload is not an event this product understands (see
    /// [`Error::MalformedEvent`] when a decoder said why).
    #[error("unrecognised event: {0}")]
    BadEvent(String),
    /// The object key is refused: outside the source prefix, wrong suffix, or it would write
    /// outside the target prefix.
    #[error("refused key s3://{bucket}/{key}: {reason}")]
    RefusedKey {
        /// Bucket of the refused object.
        bucket: String,
        /// The decoded key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration variable has an invalid value.
    #[error("bad configuration {name}={value:?}: {reason}")]
    Config {
        /// Environment variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An S3 call failed.
    #[error("s3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        /// Operation name.
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// The service's or transport's message.
        message: String,
        /// Whether a retry may succeed (throttling, 5xx, timeouts, transport).
        retryable: bool,
        /// The SDK's or the body stream's error, with its causes.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An object read in full does not exist (deleted since its event, or the event was
    /// its deletion).
    #[error("s3 GetObject s3://{bucket}/{key}: no such object")]
    NoSuchObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A Glue call failed.
    #[error("glue {op} {table}: {message}")]
    Glue {
        /// Operation name.
        op: &'static str,
        /// Table (database.table).
        table: String,
        /// The service's or transport's message.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
        /// The SDK's error, with its causes.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A snapshot table kept losing the conditional-write race.
    #[error("conditional write of s3://{bucket}/{key} lost {attempts} times in a row")]
    Contention {
        /// Bucket.
        bucket: String,
        /// Snapshot key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A Parquet object could not be read or written.
    #[error("parquet {context}: {source}")]
    Parquet {
        /// Which object or table.
        context: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Lake bookkeeping (a manifest, a device-index line) could not be encoded or decoded.
    #[error("json {context}: {source}")]
    Json {
        /// Which object.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Arrow failed to build a batch (a schema mismatch in our own code or a foreign file).
    #[error("arrow {context}: {source}")]
    Arrow {
        /// Which object or table.
        context: String,
        /// The underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// An SQS call failed (reconcile's fan-out to its queue).
    #[error("sqs {op} {queue}: {message}")]
    Sqs {
        /// Operation name.
        op: &'static str,
        /// Queue URL.
        queue: String,
        /// What went wrong (the service's code and message; the SDK's error itself, with
        /// its causes, is `source`).
        message: String,
        /// Whether a retry may succeed (throttling, 5xx, timeouts, transport).
        retryable: bool,
        /// The SDK's error, when the call itself failed.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A DynamoDB call failed (the erasure index's postings).
    #[error("dynamodb {op} {table}: {message}")]
    Dynamo {
        /// Operation name.
        op: &'static str,
        /// Table.
        table: String,
        /// The service's or transport's message.
        message: String,
        /// Whether a retry may succeed (throttling, 5xx, timeouts, transport).
        retryable: bool,
        /// The SDK's error, when the call itself failed.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The reconcile planner's local spill files (the function's `/tmp`) failed.
    #[error("local spill {path}: {source}")]
    Spill {
        /// The file or folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An invocation payload or SQS message of a known kind does not have its shape.
    #[error("unrecognised event: {context}: {source}")]
    MalformedEvent {
        /// What it was read as.
        context: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether redelivering the event may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::S3 { retryable, .. } | Error::Glue { retryable, .. } => *retryable,
            Error::Contention { .. } => true,
            Error::Sqs { retryable, .. } | Error::Dynamo { retryable, .. } => *retryable,
            Error::MalformedEvent { .. } => false,
            // A full or failing /tmp in one execution environment need not be in the next.
            Error::Spill { .. } => true,
            Error::BadEvent(_)
            | Error::NoSuchObject { .. }
            | Error::RefusedKey { .. }
            | Error::Config { .. }
            | Error::Declaration(_)
            | Error::Parquet { .. }
            | Error::Json { .. }
            | Error::Arrow { .. } => false,
        }
    }
}

/// A service error of an AWS SDK operation, as the error mappers take it: its code and
/// message, and kept as the source of ours.
#[cfg(feature = "aws")]
pub(crate) trait ServiceError:
    aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static
{
}

#[cfg(feature = "aws")]
impl<E> ServiceError for E where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static
{
}

/// Whether a failed AWS SDK call (S3, Glue, SQS: one `SdkError` type) may succeed when
/// retried: a service error if `retryable_code` says so of its code, never a request that
/// could not be built, always a timeout or transport failure.
#[cfg(feature = "aws")]
pub(crate) fn sdk_retryable<E, R>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
    retryable_code: impl FnOnce(&str) -> bool,
) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(se) => se.err().code().is_some_and(retryable_code),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// The message of a failed AWS SDK call: the service's code and message, else the SDK's
/// error with its causes.
#[cfg(feature = "aws")]
pub(crate) fn sdk_message<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => service_message(se),
        None => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

/// `code: message` of a service's error.
#[cfg(feature = "aws")]
pub(crate) fn service_message(
    e: &impl aws_smithy_types::error::metadata::ProvideErrorMetadata,
) -> String {
    format!(
        "{}: {}",
        e.code().unwrap_or("unknown"),
        e.message().unwrap_or("")
    )
}
