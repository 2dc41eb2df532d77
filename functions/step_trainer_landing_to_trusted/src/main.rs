//! `step_trainer_landing_to_trusted`: see `stedi::transitions::step_trainer_landing_to_trusted`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::Transition::StepTrainerLandingToTrusted).await
}
