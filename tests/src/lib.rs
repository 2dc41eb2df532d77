//! Test harness: a private moto_server per test (on a free loopback port), a stack
//! bootstrapped from `template.yaml`, and an independent computation of the batch truth
//! over the sample data to compare the lake against.

pub mod proxy;
pub mod truth;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use arrow_array::RecordBatch;
use bytes::Bytes;
use stedi::config::Config;
use stedi::schema::Table;
use stedi::summary::Summary;
use stedi_infra::lake;
use stedi_infra::moto::Moto;
use stedi_infra::runner::Runner;
use stedi_infra::stack::{Stack, StackConfig};

/// The sample landing data, `../shared/data/stedi` beside the repository.
pub fn sample_dir() -> PathBuf {
    stedi_infra::project_root().join("../shared/data/stedi")
}

/// A copy of the sample's landing files under `.bench/test-<name>/` (ignored), keeping the
/// lines (with their line ends) for which `keep(zone, line)` holds: a test's own landing
/// data, for the batch truth of what it uploaded.
pub fn sample_copy(name: &str, keep: impl Fn(&str, &str) -> bool) -> PathBuf {
    let dir = stedi_infra::project_root().join(format!(".bench/test-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    for zone in ["customer", "accelerometer", "step_trainer"] {
        let from = sample_dir().join(zone).join("landing");
        let to = dir.join(zone).join("landing");
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let kept: String = text
                .split_inclusive('\n')
                .filter(|l| keep(zone, l))
                .collect();
            std::fs::write(to.join(f.file_name().unwrap()), kept).unwrap();
        }
    }
    dir
}

/// Customer shards of the test stacks: fewer than the default 256 keeps every reconcile
/// pass (which compares every shard) quick; the laws tested do not depend on the count.
pub const TEST_SHARDS: u32 = 32;

/// What the handlers did while a test's events settled.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Summed over every function.
    pub total: Summary,
    /// Per function name.
    pub by_function: BTreeMap<&'static str, Summary>,
}

impl Outcome {
    fn of(r: Runner<'_>) -> Outcome {
        Outcome {
            total: r.summary,
            by_function: r.by_function,
        }
    }

    /// One function's summary (empty when it did not run).
    pub fn of_function(&self, name: &str) -> Summary {
        self.by_function.get(name).cloned().unwrap_or_default()
    }
}

/// One test's own AWS: moto_server plus a bootstrapped stack.
pub struct Local {
    /// The stack (bucket, queues, rules, Glue tables).
    pub stack: Stack,
    /// Stopped when the test ends.
    pub moto: Moto,
}

impl Local {
    /// Starts moto and bootstraps a stack with the default function configuration, but for
    /// [`TEST_SHARDS`] customer shards.
    pub async fn start() -> Result<Local> {
        Self::with_config(Config::default()).await
    }

    /// Starts moto and bootstraps a stack whose functions use `function` (with
    /// [`TEST_SHARDS`] customer shards when it asks for the default 256).
    pub async fn with_config(mut function: Config) -> Result<Local> {
        if function.customer_shards == Config::default().customer_shards {
            function.customer_shards = TEST_SHARDS;
        }
        let root = stedi_infra::project_root();
        let moto = Moto::start(&root, None, None)?;
        let cfg = StackConfig {
            endpoint: Some(moto.endpoint.clone()),
            bucket: "stedi-test".into(),
            database: function.database.clone(),
            name_prefix: "t-".into(),
            max_receive_count: 3,
            visibility_timeout: 1,
            function,
        };
        let stack = Stack::connect(cfg, &root.join("template.yaml")).await?;
        stack.bootstrap().await?;
        Ok(Local { stack, moto })
    }

    /// Drops `files` through the event path and returns what the handlers reported.
    pub async fn drop(&self, files: &[lake::LandingFile], redeliver: u32) -> Result<Outcome> {
        let mut runner = Runner::new(&self.stack).await?;
        lake::drop_files(
            &self.stack,
            &mut runner,
            files,
            redeliver,
            Duration::from_secs(300),
            |_| {},
        )
        .await?;
        Ok(Outcome::of(runner))
    }

    /// Drops the whole sample in natural order.
    pub async fn drop_sample(&self, redeliver: u32) -> Result<Outcome> {
        let files = lake::landing_files(&sample_dir(), None)?;
        self.drop(&files, redeliver).await
    }

    /// Rows per table name.
    pub async fn counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(lake::counts(&self.stack)
            .await?
            .into_iter()
            .map(|(t, n)| (t.name(), n))
            .collect())
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let mut keys = stedi::store::Store::new(self.stack.s3.clone())
            .list(&self.stack.cfg.bucket, "")
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// The stack's index table (erasure postings, ML join index).
    pub fn index(&self) -> stedi::index::Index {
        stedi::index::Index::new(
            self.stack.dynamodb.clone(),
            self.stack.cfg.function.index_table.clone(),
        )
    }

    /// The landing keys person `h` (a keyed hash) has postings for.
    pub async fn postings_of(&self, h: &str) -> Result<Vec<String>> {
        let bucket = &self.stack.cfg.bucket;
        Ok(stedi::transitions::erasure::posted(&self.index(), bucket, h).await?)
    }

    /// Records postings (keyed hash, landing key).
    pub async fn post(&self, postings: &[(String, String)]) -> Result<()> {
        let pairs = postings.iter().map(|(h, l)| (h.as_str(), l.as_str()));
        let bucket = &self.stack.cfg.bucket;
        Ok(stedi::transitions::erasure::post(&self.index(), bucket, pairs).await?)
    }

    /// Removes postings (keyed hash, landing key).
    pub async fn unpost(&self, postings: &[(String, String)]) -> Result<()> {
        let pairs = postings.iter().map(|(h, l)| (h.as_str(), l.as_str()));
        let bucket = &self.stack.cfg.bucket;
        Ok(stedi::transitions::erasure::unpost(&self.index(), bucket, pairs).await?)
    }

    /// Every entry of this stack's lake in the index table whose partition key is
    /// `<bucket>/<namespace>/…` or `<bucket>/<namespace>`: (the rest of the partition key,
    /// sort key), sorted (a scan: a test's table is small).
    pub async fn index_entries(&self, namespace: &str) -> Result<Vec<(String, String)>> {
        let prefix = format!("{}/{namespace}/", self.stack.cfg.bucket);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .stack
                .dynamodb
                .scan()
                .table_name(&self.stack.cfg.function.index_table)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            for item in page.items() {
                let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                if let (Some(pk), Some(sk)) = (text("pk"), text("sk"))
                    && let Some(rest) = pk
                        .strip_prefix(&prefix)
                        .or((pk == prefix[..prefix.len() - 1]).then_some(""))
                {
                    out.push((rest.to_string(), sk));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every posting of this stack's lake, (keyed hash, landing key), sorted.
    pub async fn all_postings(&self) -> Result<Vec<(String, String)>> {
        self.index_entries("persons").await
    }

    /// The ML join index of this stack's lake, (`dt=<dt>`, `<folder>/<s|p>.<stem>`), sorted.
    pub async fn join_entries(&self) -> Result<Vec<(String, String)>> {
        self.index_entries("join").await
    }

    /// Reads an object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self
            .stack
            .s3
            .get_object()
            .bucket(&self.stack.cfg.bucket)
            .key(key)
            .send()
            .await?;
        Ok(out.body.collect().await?.into_bytes())
    }

    /// The name of the objects holding landing source `stem`'s rows in partitioned table
    /// `table`, as its manifest says: its own stem, or its SQS batch's.
    pub async fn object_of(&self, table: Table, stem: &str) -> Result<String> {
        let m = self.manifest(table, stem).await?;
        Ok(m.object_of(stem).to_string())
    }

    /// The manifest of landing source `stem`'s outputs in `table` (an error when there is
    /// none).
    pub async fn manifest(&self, table: Table, stem: &str) -> Result<stedi::transitions::Manifest> {
        let ctx = self.stack.function_context();
        let bucket = &self.stack.cfg.bucket;
        stedi::transitions::read_manifest(&ctx, bucket, table, stem)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no manifest of {stem} in {}", table.name()))
    }

    /// Writes the manifest of landing source `stem`'s outputs in `table` (as a function
    /// would).
    pub async fn set_manifest(
        &self,
        table: Table,
        stem: &str,
        m: &stedi::transitions::Manifest,
    ) -> Result<()> {
        let ctx = self.stack.function_context();
        let bucket = &self.stack.cfg.bucket;
        Ok(stedi::transitions::write_manifest(&ctx, bucket, table, stem, m).await?)
    }

    /// The stems of every manifest of `table` in the index table, in order.
    pub async fn manifest_stems(&self, table: Table) -> Result<Vec<String>> {
        let ctx = self.stack.function_context();
        let bucket = &self.stack.cfg.bucket;
        Ok(
            stedi::transitions::all_manifests(&ctx, bucket, table, |_| ())
                .await?
                .into_keys()
                .collect(),
        )
    }

    /// Deletes an object.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.stack
            .s3
            .delete_object()
            .bucket(&self.stack.cfg.bucket)
            .key(key)
            .send()
            .await?;
        Ok(())
    }

    /// Writes an object (raw, as a user's upload).
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) -> Result<()> {
        self.stack
            .s3
            .put_object()
            .bucket(&self.stack.cfg.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.into()))
            .send()
            .await?;
        Ok(())
    }

    /// The rows of a Parquet table as Athena would see them.
    pub async fn batches(&self, table: Table) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for key in lake::table_objects(&self.stack, table).await? {
            out.extend(stedi::columnar::read_parquet(
                self.get(&key).await?,
                &[],
                &key,
            )?);
        }
        Ok(out)
    }

    /// A second view of the same stack whose clients go to `endpoint` (e.g. a proxy).
    pub async fn via(&self, endpoint: &str) -> Result<Stack> {
        let cfg = StackConfig {
            endpoint: Some(endpoint.to_string()),
            ..self.stack.cfg.clone()
        };
        Stack::connect(cfg, &stedi_infra::project_root().join("template.yaml")).await
    }

    /// Uploads `body` under `key` and lets the events settle.
    pub async fn drop_bytes(&self, key: &str, body: impl Into<Bytes>) -> Result<Outcome> {
        self.put(key, body).await?;
        self.settle().await
    }

    /// `stedi reconcile` through the reconcile queue.
    pub async fn reconcile(&self) -> Result<stedi::reconcile::Report> {
        self.reconcile_scoped(stedi::reconcile::Scope::Full).await
    }

    /// `stedi reconcile` (`--changed` with [`stedi::reconcile::Scope::Changed`]).
    pub async fn reconcile_scoped(
        &self,
        scope: stedi::reconcile::Scope,
    ) -> Result<stedi::reconcile::Report> {
        let mut runner = Runner::new(&self.stack).await?;
        lake::reconcile(&self.stack, &mut runner, Duration::from_secs(300), scope).await
    }

    /// Drains the queues (after uploads done by the test itself).
    pub async fn settle(&self) -> Result<Outcome> {
        let mut runner = Runner::new(&self.stack).await?;
        runner.drain(Duration::from_secs(600)).await?;
        Ok(Outcome::of(runner))
    }
}

/// A policy that denies the PUTs under one key prefix and allows every other request:
/// where an attempt that stops half-way (a timeout, throttling) leaves off
/// ([`stedi::store::with_policy`]).
pub struct DenyPuts(pub &'static str);

impl stedi::store::Authorizer for DenyPuts {
    fn allows(&self, action: &str, resource: &str) -> bool {
        !(action == "s3:PutObject" && resource.contains(&format!("/{}", self.0)))
    }
    fn name(&self) -> &str {
        "an attempt stopped half-way"
    }
}
