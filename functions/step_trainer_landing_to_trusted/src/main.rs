//! `step_trainer_landing_to_trusted`: see `stedi::transitions::step_trainer_landing_to_trusted`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve(stedi::lambda::Function::Transition(
        stedi::Transition::StepTrainerLandingToTrusted,
    ))
    .await
}
