//! The local runner plays IAM: each function's S3 requests are held to its policy in
//! `template.yaml` (moto enforces none), so every other test also checks the template.

use serde_json::json;
use stedi_tests::Local;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_template_does_not_allow_fails_the_drain_with_access_denied() {
    let mut local = Local::start().await.unwrap();
    // The phone function's policy without its landing folder.
    for route in local
        .stack
        .routes
        .iter_mut()
        .filter(|r| r.function == "accelerometer_landing_to_trusted")
    {
        for statement in &mut route.policy.statements {
            statement
                .resources
                .retain(|r| !r.ends_with("/accelerometer/landing/*"));
        }
    }
    let line =
        json!({"user": "a@b.c", "timestamp": 1655564444103_i64, "x": 1.0, "y": 0.0, "z": 0.0});
    let err = local
        .drop_bytes("accelerometer/landing/a.json", format!("{line}\n"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "template.yaml denies requests the functions made (AccessDenied): \
         accelerometer_landing_to_trusted s3:GetObject \
         arn:aws:s3:::stedi-test/accelerometer/landing/a.json"
    );
    // Nothing was written: the file was never read.
    let written = local
        .stack
        .s3
        .list_objects_v2()
        .bucket("stedi-test")
        .prefix("accelerometer/trusted/")
        .send()
        .await
        .unwrap();
    assert_eq!(written.key_count(), Some(0));
}
