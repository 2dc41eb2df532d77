//! `erasure`: see `stedi::transitions::erasure`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Erasure).await
}
