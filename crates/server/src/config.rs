//! The configuration file (`--config FILE`, TOML): policy parameters that
//! reach the guests at every call, so a limit changes without a rebuild.
//!
//! ```toml
//! [transfer_check]
//! amount_limit = 1000000             # minor units, inclusive
//! authorized_roles = ["authorized"]
//! daily_limit = 5000000              # per from_account and day; absent = off
//! day_offset = "+08:00"              # where the day starts; default UTC
//! ```
//!
//! Unknown keys, wrong types and impossible values are errors that name the
//! file and the field; nothing falls back silently.

use serde::{Deserialize, Serialize};
use std::path::Path;
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_contract::MAX_AMOUNT;
use teller_contract::PolicyConfig;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub transfer_check: TransferCheckConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferCheckConfig {
    #[serde(default = "default_limit")]
    pub amount_limit: u64,
    #[serde(default = "default_roles")]
    pub authorized_roles: Vec<String>,
    /// Most one `from_account` may send per day, in minor units (allowed
    /// transfers only); absent turns the daily limit off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<u64>,
    /// Where the day of `daily_limit` starts, as a UTC offset (`+08:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_offset: Option<String>,
}

impl Default for TransferCheckConfig {
    fn default() -> Self {
        Self {
            amount_limit: default_limit(),
            authorized_roles: default_roles(),
            daily_limit: None,
            day_offset: None,
        }
    }
}

/// Largest `daily_limit`: every total stays exact in Redis's Lua, whose
/// numbers are doubles.
pub const MAX_DAILY_LIMIT: u64 = (1 << 53) - 1;

/// `±HH:MM` as minutes east of UTC, within the ±14:00 that exist.
pub fn parse_day_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 14 * 60).then_some(sign * minutes)
}

fn default_limit() -> u64 {
    teller_contract::DEFAULT_AMOUNT_LIMIT
}

fn default_roles() -> Vec<String> {
    teller_contract::DEFAULT_AUTHORIZED_ROLES
        .iter()
        .map(|r| r.to_string())
        .collect()
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_request(
                ErrorCode::ConfigUnreadable,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text).map_err(|e| Error {
            message: format!("{}: {}", path.display(), e.message),
            ..e
        })
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            Error::bad_request(ErrorCode::ConfigInvalid, e.to_string().trim().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let tc = &self.transfer_check;
        if tc.amount_limit > MAX_AMOUNT {
            return Err(Error::bad_request(
                ErrorCode::ConfigInvalid,
                "amount_limit is above 2^63-1, the largest amount a request may carry",
            )
            .with_field("transfer_check.amount_limit"));
        }
        if tc.authorized_roles.is_empty() {
            return Err(Error::bad_request(
                ErrorCode::ConfigInvalid,
                "authorized_roles is empty: no transfer could ever be allowed",
            )
            .with_field("transfer_check.authorized_roles"));
        }
        if let Some(role) = tc.authorized_roles.iter().find(|r| r.trim().is_empty()) {
            return Err(Error::bad_request(
                ErrorCode::ConfigInvalid,
                format!("authorized_roles holds a blank role {role:?}"),
            )
            .with_field("transfer_check.authorized_roles"));
        }
        if tc.daily_limit.is_some_and(|l| l > MAX_DAILY_LIMIT) {
            return Err(Error::bad_request(
                ErrorCode::ConfigInvalid,
                format!("daily_limit is above {MAX_DAILY_LIMIT} (2^53-1), the largest total kept exactly"),
            )
            .with_field("transfer_check.daily_limit"));
        }
        if let Some(offset) = &tc.day_offset
            && parse_day_offset(offset).is_none()
        {
            return Err(Error::bad_request(
                ErrorCode::ConfigInvalid,
                format!(
                    "day_offset {offset:?} is not a UTC offset such as \"+08:00\" or \"-05:00\""
                ),
            )
            .with_field("transfer_check.day_offset"));
        }
        Ok(())
    }

    /// The configuration as a file `parse` reads back.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| {
            Error::internal(
                ErrorCode::ConfigInvalid,
                format!("cannot write the configuration: {e}"),
            )
        })
    }

    /// The parameters as the guest receives them.
    pub fn policy_config(&self) -> PolicyConfig {
        PolicyConfig {
            amount_limit: self.transfer_check.amount_limit,
            authorized_roles: self.transfer_check.authorized_roles.clone(),
            daily_limit: self.transfer_check.daily_limit,
            day_offset_minutes: self
                .transfer_check
                .day_offset
                .as_deref()
                .and_then(parse_day_offset)
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_offsets_parse_or_are_refused() {
        assert_eq!(parse_day_offset("+08:00"), Some(480));
        assert_eq!(parse_day_offset("-05:30"), Some(-330));
        assert_eq!(parse_day_offset("+00:00"), Some(0));
        for bad in [
            "08:00",
            "+8:00",
            "+08:60",
            "+15:00",
            "+08",
            "",
            "+0a:00",
            "+08:00:00",
        ] {
            assert_eq!(parse_day_offset(bad), None, "{bad}");
        }
        let e = Config::parse("[transfer_check]\nday_offset = \"UTC+8\"").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("transfer_check.day_offset"));
        let e = Config::parse("[transfer_check]\ndaily_limit = 9007199254740992").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("transfer_check.daily_limit"));
        let c =
            Config::parse("[transfer_check]\ndaily_limit = 500\nday_offset = \"+08:00\"").unwrap();
        assert_eq!(c.policy_config().daily_limit, Some(500));
        assert_eq!(c.policy_config().day_offset_minutes, 480);
    }

    #[test]
    fn written_configuration_reads_back() {
        let mut config = Config::default();
        config.transfer_check.authorized_roles = vec!["a \"quoted\" \u{1f600} role".into()];
        let back = Config::parse(&config.to_toml().unwrap()).unwrap();
        assert_eq!(
            back.transfer_check.authorized_roles,
            config.transfer_check.authorized_roles
        );
        assert_eq!(back.transfer_check.amount_limit, 1_000_000);
    }

    #[test]
    fn defaults_are_the_banks_policy() {
        let c = Config::parse("").unwrap().policy_config();
        assert_eq!(c.amount_limit, 1_000_000);
        assert_eq!(c.authorized_roles, ["authorized"]);
    }

    #[test]
    fn rejects_unknown_keys_wrong_types_and_impossible_values() {
        let e = Config::parse("[transfer_check]\nlimit = 5\n").unwrap_err();
        assert!(e.message.contains("unknown field `limit`"), "{e}");
        let e = Config::parse("[transfer_check]\namount_limit = \"5\"\n").unwrap_err();
        assert!(e.message.contains("amount_limit"), "{e}");
        let e = Config::parse("[transfer_check]\nauthorized_roles = []\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("transfer_check.authorized_roles"));
        let e = Config::parse("[transfer_check]\namount_limit = -1\n").unwrap_err();
        assert_eq!(e.code, "config_invalid");
    }
}
