//! `reconcile`: see `stedi::reconcile`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Reconcile).await
}
