//! `machine_learning_trusted_to_curated`: see `stedi::transitions::machine_learning_trusted_to_curated`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::Transition::MachineLearningTrustedToCurated).await
}
