//! One Lambda function: the one `stedi::lambda::Function::from_name` gives for this
//! binary's name (`functions/<name>`; the transitions are declared in `stedi::streams`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stedi::lambda::serve_named(env!("CARGO_BIN_NAME")).await
}
