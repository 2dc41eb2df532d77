//! `compact`: see `stedi::transitions::compact`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Compact).await
}
