//! `stedi ddl`: the Athena `CREATE EXTERNAL TABLE` statements of all eight tables,
//! generated from the same definitions bootstrap gives Glue ([`stedi::catalog`]), plus
//! `MSCK REPAIR TABLE` for the partitioned ones.

use anyhow::Result;
use stedi::catalog;
use stedi::schema::Table;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements for `database` over `bucket`, each ending with `;`.
pub fn statements(database: &str, bucket: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut repairs = Vec::new();
    for table in Table::ALL {
        let t = catalog::table_input(table, bucket)?;
        let Some(sd) = t.storage_descriptor() else {
            continue;
        };
        let cols: Vec<String> = sd
            .columns()
            .iter()
            .map(|c| format!("  `{}` {}", c.name(), c.r#type().unwrap_or("string")))
            .collect();
        let mut s = format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{}` (\n{}\n)",
            t.name(),
            cols.join(",\n")
        );
        if !t.partition_keys().is_empty() {
            let keys: Vec<String> = t
                .partition_keys()
                .iter()
                .map(|c| format!("`{}` {}", c.name(), c.r#type().unwrap_or("string")))
                .collect();
            s.push_str(&format!("\nPARTITIONED BY ({})", keys.join(", ")));
            repairs.push(format!("MSCK REPAIR TABLE `{database}`.`{}`;", t.name()));
        }
        if let Some(serde) = sd.serde_info() {
            s.push_str(&format!(
                "\nROW FORMAT SERDE {}",
                quote(serde.serialization_library().unwrap_or_default())
            ));
            if let Some(params) = serde.parameters() {
                let mut params: Vec<_> = params.iter().collect();
                params.sort();
                let params: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                    .collect();
                s.push_str(&format!("\nWITH SERDEPROPERTIES ({})", params.join(", ")));
            }
        }
        s.push_str(&format!(
            "\nSTORED AS INPUTFORMAT {}\nOUTPUTFORMAT {}\nLOCATION {}",
            quote(sd.input_format().unwrap_or_default()),
            quote(sd.output_format().unwrap_or_default()),
            quote(sd.location().unwrap_or_default())
        ));
        if let Some(params) = t.parameters() {
            let mut params: Vec<_> = params.iter().filter(|(k, _)| *k != "EXTERNAL").collect();
            params.sort();
            let params: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect();
            s.push_str(&format!("\nTBLPROPERTIES ({})", params.join(", ")));
        }
        s.push(';');
        out.push(s);
    }
    out.extend(repairs);
    Ok(out)
}
