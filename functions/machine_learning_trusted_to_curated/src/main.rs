//! `machine_learning_trusted_to_curated`: see `stedi::transitions::machine_learning_trusted_to_curated`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Transition(
        stedi::Transition::MachineLearningTrustedToCurated,
    ))
    .await
}
