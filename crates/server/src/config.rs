//! The configuration file (`--config FILE`, TOML): policy parameters that
//! reach the guests at every call, so a limit changes without a rebuild.
//!
//! ```toml
//! [transfer_check]
//! amount_limit = 1000000             # minor units, inclusive
//! authorized_roles = ["authorized"]
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
}

impl Default for TransferCheckConfig {
    fn default() -> Self {
        Self {
            amount_limit: default_limit(),
            authorized_roles: default_roles(),
        }
    }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
