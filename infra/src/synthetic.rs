//! Synthetic customers for scale probes and tests: customer `i` has e-mail
//! `c<i>@scale.test`, serial `S<i>`, and consents when `i` is even.

use serde_json::json;

/// Customer `i`'s e-mail.
pub fn email(i: u64) -> String {
    format!("c{i:08}@scale.test")
}

/// Customer `i`'s device serial.
pub fn serial(i: u64) -> String {
    format!("S{i:08}")
}

/// Customer `i`'s landing line (JSON, no newline).
pub fn customer_line(i: u64) -> String {
    let research = if i.is_multiple_of(2) {
        json!(1_600_000_000_000i64)
    } else {
        json!(null)
    };
    json!({
        "customerName": format!("Customer {i}"), "email": email(i),
        "phone": "8015551212", "birthday": "1990-01-01", "serialNumber": serial(i),
        "registrationDate": 1_600_000_000_000i64,
        "lastUpdateDate": 1_600_000_000_000i64 + i as i64,
        "shareWithResearchAsOfDate": research, "shareWithPublicAsOfDate": null,
        "shareWithFriendsAsOfDate": null,
    })
    .to_string()
}

/// Customers `from..to` as one landing file body.
pub fn customers_file(from: u64, to: u64) -> String {
    (from..to).map(|i| customer_line(i) + "\n").collect()
}

/// `n` phone readings of customer `i` from `ts` on, one per millisecond.
pub fn readings_file(i: u64, ts: i64, n: i64) -> String {
    (0..n)
        .map(|k| {
            json!({"user": email(i), "timestamp": ts + k, "x": 1, "y": 2, "z": 3}).to_string()
                + "\n"
        })
        .collect()
}

/// `n` Step Trainer readings of customer `i`'s device from `ts` on, one per millisecond.
pub fn step_file(i: u64, ts: i64, n: i64) -> String {
    (0..n)
        .map(|k| {
            let line = json!({"sensorReadingTime": ts + k, "serialNumber": serial(i),
                "distanceFromObject": k % 50});
            line.to_string() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_customer_consents() {
        let even: serde_json::Value = serde_json::from_str(&customer_line(2)).unwrap();
        let odd: serde_json::Value = serde_json::from_str(&customer_line(3)).unwrap();
        assert_eq!(even["email"], "c00000002@scale.test");
        assert_eq!(even["serialNumber"], "S00000002");
        assert_eq!(even["shareWithResearchAsOfDate"], 1_600_000_000_000i64);
        assert!(odd["shareWithResearchAsOfDate"].is_null());
        assert_eq!(customers_file(0, 3).lines().count(), 3);
        assert_eq!(readings_file(0, 5, 2).lines().count(), 2);
        let step: serde_json::Value = serde_json::from_str(step_file(4, 7, 1).trim_end()).unwrap();
        assert_eq!(step["serialNumber"], "S00000004");
        assert_eq!(step["sensorReadingTime"], 7);
    }
}
