//! The batch-truth SQL of DESIGN.md, computed directly over the landing JSON with
//! serde_json: an implementation independent of the pipeline's, to compare row sets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// Lower-cases every key of a JSON object (the landing tables are case-insensitive).
fn lower(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect(),
        _ => BTreeMap::new(),
    }
}

fn read_lines(dir: &Path) -> Result<Vec<BTreeMap<String, Value>>> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f)?.lines() {
            if !line.trim().is_empty() {
                out.push(lower(serde_json::from_str(line)?));
            }
        }
    }
    Ok(out)
}

/// One accelerometer row: user, timestamp, x, y, z (floats as bit patterns for ordering).
pub type Accel = (String, i64, u64, u64, u64);
/// One step trainer row: time, serial, distance.
pub type Step = (i64, String, i64);
/// One ML row: time, serial, distance, x, y, z.
pub type Ml = (i64, String, i64, u64, u64, u64);

/// All tables of the batch truth.
pub struct Truth {
    /// customer_trusted e-mails.
    pub customer_trusted: BTreeSet<String>,
    /// accelerometer_trusted rows (a multiset: sorted list).
    pub accelerometer_trusted: Vec<Accel>,
    /// customer_curated e-mails.
    pub customer_curated: BTreeSet<String>,
    /// The device serial of each customer_curated customer (e-mail → serial).
    pub curated_serials: BTreeMap<String, String>,
    /// step_trainer_trusted rows.
    pub step_trainer_trusted: Vec<Step>,
    /// machine_learning_curated rows.
    pub machine_learning_curated: Vec<Ml>,
}

fn f(v: &Value) -> u64 {
    v.as_f64().unwrap_or(f64::NAN).to_bits()
}

impl Truth {
    /// Computes the truth over a data folder (customer/, accelerometer/, step_trainer/).
    pub fn compute(data: &Path, consent_as_of: bool) -> Result<Truth> {
        let customers = read_lines(&data.join("customer/landing"))?;
        let mut latest: HashMap<String, &BTreeMap<String, Value>> = HashMap::new();
        for c in &customers {
            let email = c["email"].as_str().unwrap_or_default().to_string();
            let newer = latest
                .get(&email)
                .is_none_or(|cur| c["lastupdatedate"].as_i64() >= cur["lastupdatedate"].as_i64());
            if newer {
                latest.insert(email, c);
            }
        }
        let trusted: HashMap<String, &BTreeMap<String, Value>> = latest
            .into_iter()
            .filter(|(_, c)| {
                c.get("sharewithresearchasofdate")
                    .and_then(Value::as_i64)
                    .is_some_and(|d| d > 0)
            })
            .collect();
        let mut accel = Vec::new();
        for a in read_lines(&data.join("accelerometer/landing"))? {
            let user = a["user"].as_str().unwrap_or_default().to_string();
            let ts = a["timestamp"].as_i64().unwrap_or_default();
            let Some(c) = trusted.get(&user) else {
                continue;
            };
            let consent = c["sharewithresearchasofdate"].as_i64().unwrap_or_default();
            if consent_as_of && ts < consent {
                continue;
            }
            accel.push((user, ts, f(&a["x"]), f(&a["y"]), f(&a["z"])));
        }
        accel.sort();
        let users: BTreeSet<String> = accel.iter().map(|a| a.0.clone()).collect();
        let curated: BTreeSet<String> = trusted
            .keys()
            .filter(|e| users.contains(*e))
            .cloned()
            .collect();
        let curated_serials: BTreeMap<String, String> = curated
            .iter()
            .map(|e| {
                let s = trusted[e]["serialnumber"].as_str().unwrap_or_default();
                (e.clone(), s.to_string())
            })
            .collect();
        let serial_owners: HashMap<String, Vec<String>> =
            curated_serials
                .iter()
                .fold(HashMap::new(), |mut m, (e, s)| {
                    m.entry(s.clone()).or_default().push(e.clone());
                    m
                });
        let mut steps = Vec::new();
        for s in read_lines(&data.join("step_trainer/landing"))? {
            let serial = s["serialnumber"].as_str().unwrap_or_default().to_string();
            if serial_owners.contains_key(&serial) {
                steps.push((
                    s["sensorreadingtime"].as_i64().unwrap_or_default(),
                    serial,
                    s["distancefromobject"].as_i64().unwrap_or_default(),
                ));
            }
        }
        steps.sort();
        let mut accel_by: HashMap<(&str, i64), Vec<&Accel>> = HashMap::new();
        for a in &accel {
            accel_by.entry((a.0.as_str(), a.1)).or_default().push(a);
        }
        let mut ml = Vec::new();
        for (t, serial, d) in &steps {
            for email in &serial_owners[serial] {
                for a in accel_by.get(&(email.as_str(), *t)).into_iter().flatten() {
                    ml.push((*t, serial.clone(), *d, a.2, a.3, a.4));
                }
            }
        }
        ml.sort();
        Ok(Truth {
            customer_trusted: trusted.keys().cloned().collect(),
            accelerometer_trusted: accel,
            customer_curated: curated,
            curated_serials,
            step_trainer_trusted: steps,
            machine_learning_curated: ml,
        })
    }

    /// The `(dt, step file stem, phone file stem)` pairs of landing files of `data` that
    /// share at least one machine_learning_curated row: the pairs the ML table holds an
    /// object for.
    pub fn ml_pairs(&self, data: &Path) -> Result<BTreeSet<(String, String, String)>> {
        let stem = |p: &Path| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string()
        };
        type Lines = Vec<BTreeMap<String, Value>>;
        let files = |zone: &str| -> Result<Vec<(String, Lines)>> {
            let dir = data.join(zone).join("landing");
            let mut out = Vec::new();
            for f in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
                let path = f?.path();
                let lines = std::fs::read_to_string(&path)?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).map(lower))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                out.push((stem(&path), lines));
            }
            Ok(out)
        };
        let trusted: BTreeSet<(String, i64)> = self
            .accelerometer_trusted
            .iter()
            .map(|a| (a.0.clone(), a.1))
            .collect();
        // (serial, time) of each phone file's trusted readings, through the owner's device.
        let mut phone = Vec::new();
        for (stem, lines) in files("accelerometer")? {
            let keys: BTreeSet<(String, i64)> = lines
                .iter()
                .filter_map(|a| {
                    let user = a["user"].as_str()?.to_string();
                    let ts = a["timestamp"].as_i64()?;
                    let serial = self.curated_serials.get(&user)?;
                    trusted.contains(&(user, ts)).then(|| (serial.clone(), ts))
                })
                .collect();
            phone.push((stem, keys));
        }
        let mut pairs = BTreeSet::new();
        for (step, lines) in files("step_trainer")? {
            for (p, keys) in &phone {
                for s in &lines {
                    let serial = s["serialnumber"].as_str().unwrap_or_default().to_string();
                    let ts = s["sensorreadingtime"].as_i64().unwrap_or_default();
                    if keys.contains(&(serial, ts)) {
                        let dt = stedi::keys::dt_of_millis(ts).unwrap_or_default();
                        pairs.insert((dt, step.clone(), p.clone()));
                    }
                }
            }
        }
        Ok(pairs)
    }
}
