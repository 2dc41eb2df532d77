//! `stedi`: the local stack and lake command. See the README for every command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stedi::Transition;
use stedi::config::Config;
use stedi_infra::lake;
use stedi_infra::moto::Moto;
use stedi_infra::runner::Runner;
use stedi_infra::stack::{Stack, StackConfig};

#[derive(Parser)]
#[command(
    name = "stedi",
    about = "STEDI lakehouse: local stack, bootstrap, drop, run, counts"
)]
struct Cli {
    /// AWS endpoint (default: AWS_ENDPOINT_URL, else the stack started by `stedi up`, else
    /// real AWS).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The lake bucket.
    #[arg(
        long,
        global = true,
        env = "STEDI_BUCKET",
        default_value = "stedi-lake"
    )]
    bucket: String,
    /// Prefix of queue and rule names.
    #[arg(
        long,
        global = true,
        env = "STEDI_STACK_PREFIX",
        default_value = "stedi-"
    )]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start moto_server on 127.0.0.1 and the local runner (state under .stedi/).
    Up {
        /// Port for moto_server.
        #[arg(long, env = "STEDI_PORT", default_value_t = 5000)]
        port: u16,
    },
    /// Stop what `up` started.
    Down,
    /// Create the bucket, EventBridge rules, queues, Glue database and tables (idempotent).
    Bootstrap,
    /// Upload landing files; events flow through EventBridge and SQS to the handlers.
    Drop {
        /// A data folder (customer/, accelerometer/, step_trainer/), a zone folder or a file.
        path: PathBuf,
        /// The zone of PATH when it cannot be told from the path.
        #[arg(long)]
        zone: Option<String>,
        /// Deliver every upload's event this many more times.
        #[arg(long, default_value_t = 0)]
        redeliver: u32,
    },
    /// Run one function on one object, as a Lambda invocation would.
    Run {
        /// Function name, e.g. customer_landing_to_trusted.
        function: String,
        /// Object key.
        #[arg(long)]
        key: String,
    },
    /// Bring every trusted and curated table to the batch truth (the backfill).
    Reconcile {
        /// Check only what changed, as the daily schedule does: reading files without a
        /// manifest or written after it, and manifests written since the last pass (the
        /// full check otherwise).
        #[arg(long)]
        changed: bool,
    },
    /// Compact the partitions of the partitioned tables that are due (COMPACT_MIN_OBJECTS
    /// per-source objects not compacted yet), as the scheduled `compact` function does.
    Compact {
        /// Compact every partition holding anything not compacted yet.
        #[arg(long)]
        force: bool,
    },
    /// Erase a person from every zone, landing included (GDPR Art. 17), as the `erasure`
    /// function does for a request object; prints the audit record (no personal data) and
    /// the requests the erasure made.
    Erase {
        /// The person's e-mail.
        #[arg(long)]
        email: String,
        /// The request id the audit record is kept under (default: `cli-<epoch ms>`).
        #[arg(long)]
        request: Option<String>,
    },
    /// One line per table: `<table> <rows>`.
    Counts,
    /// Athena-style SQL over the Glue catalog and the Parquet in S3.
    Query {
        /// The statement.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: stedi_infra::query::OutputFormat,
    },
    /// Print the Athena DDL of all eight tables.
    Ddl,
    /// up, bootstrap, drop the sample data in natural order, print the counts.
    Demo {
        /// The sample data folder.
        #[arg(long, default_value = "../shared/data/stedi")]
        data: PathBuf,
    },
    /// Poll the queues forever (started in the background by `up`).
    #[command(hide = true)]
    Runner,
}

fn state_dir() -> PathBuf {
    stedi_infra::project_root().join(".stedi")
}

fn local_endpoint() -> Option<String> {
    std::fs::read_to_string(state_dir().join("endpoint"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn resolve_endpoint(cli: &Cli) -> Option<String> {
    cli.endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(local_endpoint)
}

async fn connect(cli: &Cli) -> Result<Stack> {
    let function = Config::from_env()?;
    let cfg = StackConfig {
        endpoint: resolve_endpoint(cli),
        bucket: cli.bucket.clone(),
        database: function.database.clone(),
        name_prefix: cli.prefix.clone(),
        max_receive_count: 5,
        visibility_timeout: 2,
        function,
    };
    Stack::connect(cfg, &stedi_infra::project_root().join("template.yaml")).await
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(state_dir().join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn up(port: u16) -> Result<String> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    if let (Some(pid), Some(ep)) = (read_pid("moto.pid"), local_endpoint())
        && alive(pid)
    {
        eprintln!("stack already up at {ep}");
        return Ok(ep);
    }
    let root = stedi_infra::project_root();
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        bail!("port {port} is taken: pass --port or set STEDI_PORT");
    }
    let m = Moto::start(&root, Some(port), Some(&dir.join("moto.log")))?;
    let endpoint = m.endpoint.clone();
    std::fs::write(dir.join("moto.pid"), m.detach().to_string())?;
    std::fs::write(dir.join("endpoint"), &endpoint)?;
    let log = std::fs::File::create(dir.join("runner.log"))?;
    let runner = std::process::Command::new(std::env::current_exe()?)
        .arg("runner")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting the local runner")?;
    std::fs::write(dir.join("runner.pid"), runner.id().to_string())?;
    eprintln!("moto_server at {endpoint}; runner pid {}", runner.id());
    Ok(endpoint)
}

fn down() -> Result<()> {
    for name in ["runner.pid", "moto.pid"] {
        if let Some(pid) = read_pid(name)
            && alive(pid)
        {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = std::fs::remove_file(state_dir().join(name));
    }
    for name in ["endpoint", PAUSE, PAUSED] {
        let _ = std::fs::remove_file(state_dir().join(name));
    }
    eprintln!("stack stopped");
    Ok(())
}

/// Under `.stedi/`: the pid of a `stedi drop` or `stedi reconcile` that asks the background
/// runner (started by `up`) to stand aside while it runs the handlers itself, so that its
/// report counts every invocation.
const PAUSE: &str = "runner.pause";
/// Under `.stedi/`: the pid whose request the background runner honours (written between
/// two pumps, so nothing of its own is in flight any more).
const PAUSED: &str = "runner.paused";

/// The background runner stands aside while this lives.
struct Pause;

impl Pause {
    /// Asks the background runner, if one is alive, to stand aside, and waits until it has.
    async fn request() -> Result<Option<Pause>> {
        let Some(runner) = read_pid("runner.pid").filter(|p| alive(*p)) else {
            return Ok(None);
        };
        let me = std::process::id();
        let dir = state_dir();
        let _ = std::fs::remove_file(dir.join(PAUSED));
        std::fs::write(dir.join(PAUSE), me.to_string())
            .with_context(|| format!("writing {}", dir.join(PAUSE).display()))?;
        let pause = Pause;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read_pid(PAUSED) != Some(me) {
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "warning: the background runner (pid {runner}) did not stand aside; \
                     what it runs is not in this report"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some(pause))
    }

    /// In the background runner: whether a live process asked it to stand aside (the
    /// request is acknowledged).
    fn requested() -> bool {
        let dir = state_dir();
        match read_pid(PAUSE).filter(|p| alive(*p)) {
            Some(pid) => {
                if read_pid(PAUSED) != Some(pid) {
                    let _ = std::fs::write(dir.join(PAUSED), pid.to_string());
                }
                true
            }
            None => {
                let _ = std::fs::remove_file(dir.join(PAUSED));
                false
            }
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        if read_pid(PAUSE) == Some(std::process::id()) {
            let _ = std::fs::remove_file(state_dir().join(PAUSE));
        }
    }
}

/// Shows a drop's progress: a bar (files and bytes uploaded, what runs now) on a terminal,
/// plain lines otherwise.
struct DropProgress {
    bar: ProgressBar,
    tty: bool,
    files: usize,
    done: usize,
    bytes: u64,
}

impl DropProgress {
    fn new(files: &[lake::LandingFile]) -> Result<DropProgress> {
        // Sizes for the bar's length; a file that cannot be read fails its upload later.
        let bytes = files
            .iter()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum();
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed}] [{wide_bar}] {bytes}/{total_bytes} {prefix} {msg}",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("0/{} files", files.len()));
        if tty {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Ok(DropProgress {
            bar,
            tty,
            files: files.len(),
            done: 0,
            bytes,
        })
    }

    fn on(&mut self, event: lake::DropEvent<'_>) {
        let text = match event {
            lake::DropEvent::Uploaded { file, bytes } => {
                self.done += 1;
                self.bar.inc(bytes);
                self.bar
                    .set_prefix(format!("{}/{} files", self.done, self.files));
                if self.tty {
                    self.bar.set_message(file.key.clone());
                    return;
                }
                format!(
                    "uploaded {} ({}; {}/{} files, {} of {})",
                    file.key,
                    HumanBytes(bytes),
                    self.done,
                    self.files,
                    HumanBytes(self.bar.position()),
                    HumanBytes(self.bytes),
                )
            }
            lake::DropEvent::Draining(zone) => {
                format!("processing {}: draining the queues", zone.name())
            }
            lake::DropEvent::Redelivering { round, rounds } => {
                format!("redelivering every event (round {round} of {rounds})")
            }
        };
        if self.tty {
            self.bar.set_message(text);
        } else {
            eprintln!("{text}");
        }
    }
}

async fn drop_cmd(stack: &Stack, path: &Path, zone: Option<&str>, redeliver: u32) -> Result<()> {
    let files = lake::landing_files(path, zone)?;
    if files.is_empty() {
        bail!("no .json files under {}", path.display());
    }
    let mut runner = Runner::new(stack).await?;
    let _pause = Pause::request().await?;
    let started = std::time::Instant::now();
    let mut progress = DropProgress::new(&files)?;
    let report = lake::drop_files(
        stack,
        &mut runner,
        &files,
        redeliver,
        Duration::from_secs(600),
        |event| progress.on(event),
    )
    .await;
    progress.bar.finish_and_clear();
    let report = report?;
    let mut ms = runner.handler_ms.clone();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "dropped {} files ({}): {} invocations; wall {:.0} ms, handlers {:.0} ms \
         (p50 {:.0} ms, p95 {:.0} ms per invocation)",
        report.files,
        HumanBytes(report.bytes),
        runner.invocations,
        started.elapsed().as_secs_f64() * 1000.0,
        ms.iter().sum::<f64>(),
        pct(0.5),
        pct(0.95),
    );
    for line in report.lines() {
        eprintln!("{line}");
    }
    for line in report.requests_lines() {
        eprintln!("{line}");
    }
    Ok(())
}

async fn print_counts(stack: &Stack) -> Result<()> {
    for (table, rows) in lake::counts(stack).await? {
        println!("{} {rows}", table.name());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Up { port } => {
            up(*port)?;
        }
        Command::Down => down()?,
        Command::Bootstrap => {
            let stack = connect(&cli).await?;
            stack.bootstrap().await?;
            eprintln!(
                "bootstrapped bucket {} and database {}",
                stack.cfg.bucket, stack.cfg.database
            );
        }
        Command::Drop {
            path,
            zone,
            redeliver,
        } => {
            let stack = connect(&cli).await?;
            drop_cmd(&stack, path, zone.as_deref(), *redeliver).await?;
        }
        Command::Run { function, key } => {
            let t = Transition::from_name(function)
                .with_context(|| format!("unknown function {function}"))?;
            let stack = connect(&cli).await?;
            let ctx = stack.function_context();
            let event = stedi::event::s3_notification(&stack.cfg.bucket, key);
            stedi::lambda::init_logging();
            let (_, summary) = stedi::lambda::handle(&ctx, t, &event).await?;
            println!(
                "{}",
                stedi::lambda::summary_line(stedi::lambda::Function::Transition(t), &summary)
            );
        }
        Command::Reconcile { changed } => {
            let stack = connect(&cli).await?;
            let mut runner = Runner::new(&stack).await?;
            let _pause = Pause::request().await?;
            let scope = match changed {
                true => stedi::reconcile::Scope::Changed,
                false => stedi::reconcile::Scope::Full,
            };
            let report =
                lake::reconcile(&stack, &mut runner, Duration::from_secs(1800), scope).await?;
            for line in lake::describe(&report) {
                println!("{line}");
            }
        }
        Command::Compact { force } => {
            let stack = connect(&cli).await?;
            let ctx = stack.function_context();
            let _pause = Pause::request().await?;
            for line in lake::compact(&ctx, &stack.cfg.bucket, *force).await? {
                println!("{line}");
            }
        }
        Command::Erase { email, request } => {
            let stack = connect(&cli).await?;
            let ctx = stack.function_context();
            let _pause = Pause::request().await?;
            let request = request
                .clone()
                .unwrap_or_else(|| format!("cli-{}", chrono_millis()));
            for line in lake::erase(&ctx, &stack.cfg.bucket, email, &request).await? {
                println!("{line}");
            }
        }
        Command::Counts => {
            let stack = connect(&cli).await?;
            print_counts(&stack).await?;
        }
        Command::Query { sql, format } => {
            let stack = connect(&cli).await?;
            let batches = stedi_infra::query::query(&stack, sql).await?;
            print!("{}", stedi_infra::query::render(&batches, *format)?);
            if *format == stedi_infra::query::OutputFormat::Table {
                println!();
            }
        }
        Command::Ddl => {
            let database = Config::from_env()?.database;
            for s in stedi_infra::ddl::statements(&database, &cli.bucket)? {
                println!("{s}\n");
            }
        }
        Command::Demo { data } => {
            let port = std::env::var("STEDI_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5000);
            let endpoint = match resolve_endpoint(&cli) {
                Some(ep) => ep,
                None => up(port)?,
            };
            let stack = connect(&Cli {
                endpoint: Some(endpoint),
                bucket: cli.bucket.clone(),
                prefix: cli.prefix.clone(),
                command: Command::Counts,
            })
            .await?;
            stack.bootstrap().await?;
            drop_cmd(&stack, data, None, 0).await?;
            print_counts(&stack).await?;
            eprintln!("the stack is still up: `stedi counts`, `stedi down` when done");
        }
        Command::Runner => {
            let stack = connect(&cli).await?;
            let mut runner = loop {
                // Queues appear at bootstrap, which may come after `up`.
                if !Pause::requested()
                    && let Ok(r) = Runner::new(&stack).await
                {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            runner.verbose = true;
            loop {
                if Pause::requested() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if runner.pump_once().await? == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
    Ok(())
}

/// Milliseconds since the epoch.
fn chrono_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}
