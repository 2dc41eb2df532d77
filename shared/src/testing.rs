//! Test helpers: clients of a network where nothing answers.

/// An S3 client whose every request fails fast (nothing listens on port 9) with a
/// retryable error, and is still a request.
pub fn offline_s3() -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(Credentials::for_tests())
        .retry_config(RetryConfig::disabled())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A Glue client whose every call fails fast, as [`offline_s3`].
pub fn offline_glue() -> aws_sdk_glue::Client {
    use aws_sdk_glue::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_glue::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(Credentials::for_tests())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_glue::Client::from_conf(conf)
}

/// A DynamoDB client whose every request fails fast (nothing listens on port 9).
pub fn offline_dynamodb() -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(Credentials::for_tests())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}
