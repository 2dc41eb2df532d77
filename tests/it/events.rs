//! Keys as S3 really sends them: spaces, plus signs and unicode reach the handler intact.

use stedi::schema::Table;
use stedi_infra::lake::LandingFile;
use stedi_tests::{Local, sample_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_flow_through_eventbridge_and_sqs() {
    let local = Local::start().await.unwrap();
    let path = sample_dir().join("customer/landing/customer-1691348231425.json");
    let key = "customer/landing/my file+1 你好 😊.json";
    let out = local
        .drop(
            &[LandingFile {
                table: Table::CustomerLanding,
                path,
                key: key.to_string(),
            }],
            0,
        )
        .await
        .unwrap();
    assert!(out.total.errors.is_empty(), "{:?}", out.total.errors);
    let s = out.of_function("customer_landing_to_trusted");
    assert_eq!(s.sources, [key]);
    assert_eq!((s.rows_in, s.rows_out, s.filtered), (956, 482, 474));
    let counts = local.counts().await.unwrap();
    assert_eq!(counts["customer_trusted"], 482);
}
