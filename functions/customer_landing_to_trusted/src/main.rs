//! `customer_landing_to_trusted`: see `stedi::transitions::customer_landing_to_trusted`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Transition(
        stedi::Transition::CustomerLandingToTrusted,
    ))
    .await
}
