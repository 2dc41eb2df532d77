//! `customer_trusted_to_curated`: see `stedi::transitions::customer_trusted_to_curated`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Transition(
        stedi::Transition::CustomerTrustedToCurated,
    ))
    .await
}
