//! `teller serve --settings FILE`: every `serve` flag may also come from a
//! TOML file whose keys are the flag names (`listen = "0.0.0.0:8080"`,
//! `guest-deadline-ms = 100`). Precedence: a flag, then its `TELLER_*`
//! environment variable, then the file, then the default. `--print-config`
//! shows the result and where each value came from, secrets redacted.

use clap::parser::ValueSource;
use std::collections::BTreeSet;
use std::ffi::OsString;
use teller_contract::Error;
use teller_contract::ErrorCode;

/// The flags the file may not set.
const NOT_IN_FILE: [&str; 3] = ["settings", "print-config", "help"];

/// The command line with the settings file's values added as flags.
pub struct Expanded {
    pub argv: Vec<OsString>,
    /// The flags the file set.
    pub from_file: BTreeSet<String>,
    /// The settings file, as it is named in messages.
    pub file: Option<String>,
}

impl Expanded {
    /// What to add to an error about a value that may have come from the
    /// file.
    pub fn note(&self) -> Option<String> {
        let file = self.file.as_ref().filter(|_| !self.from_file.is_empty())?;
        let keys: Vec<&str> = self.from_file.iter().map(String::as_str).collect();
        Some(format!("{file} set {}", keys.join(", ")))
    }
}

/// `argv` with the settings file's values added as flags, where neither a
/// flag nor an environment variable sets them.
pub fn expand(argv: Vec<OsString>, serve: &clap::Command) -> Result<Expanded, Error> {
    let mut added = BTreeSet::new();
    let unchanged = |argv| Expanded {
        argv,
        from_file: BTreeSet::new(),
        file: None,
    };
    if argv.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(unchanged(argv));
    }
    let given = |long: &str| {
        argv.iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    };
    let path = argv
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            let a = a.to_str()?;
            if a == "--settings" {
                argv.get(i + 1).cloned()
            } else {
                a.strip_prefix("--settings=").map(OsString::from)
            }
        })
        .or_else(|| std::env::var_os("TELLER_SETTINGS"));
    let Some(path) = path else {
        return Ok(unchanged(argv));
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let invalid =
        |why: String| Error::bad_request(ErrorCode::ConfigInvalid, format!("{shown}: {why}"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::bad_request(
            ErrorCode::ConfigUnreadable,
            format!("cannot read {shown}: {e}"),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e| invalid(format!("{e}")))?;
    let mut extra = Vec::new();
    for (key, value) in table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| {
                invalid(format!(
                    "unknown setting `{key}` (settings are the flags of `teller serve`)"
                ))
            })?;
        let from_env = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if given(&key) || from_env {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if on {
                    extra.push(OsString::from(format!("--{key}")));
                }
            }
            toml::Value::String(s) if takes_value => {
                extra.push(OsString::from(format!("--{key}={s}")));
            }
            toml::Value::Integer(n) if takes_value => {
                extra.push(OsString::from(format!("--{key}={n}")));
            }
            other => {
                return Err(invalid(format!(
                    "`{key}` has the wrong type ({}): {}",
                    other.type_str(),
                    if takes_value {
                        "a string or an integer is expected"
                    } else {
                        "true or false is expected"
                    }
                )));
            }
        }
        added.insert(key);
    }
    let mut expanded = argv;
    expanded.splice(2..2, extra);
    Ok(Expanded {
        argv: expanded,
        from_file: added,
        file: Some(shown),
    })
}

/// The effective `serve` settings as TOML, each with its source.
pub fn print(
    matches: &clap::ArgMatches,
    serve: &clap::Command,
    from_file: &BTreeSet<String>,
) -> String {
    let mut out = String::from(
        "# teller serve: effective settings (flag > TELLER_* environment > settings file > default)\n",
    );
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) || long == "version" {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = if from_file.contains(long) {
            "settings file"
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            }
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        // A Redis URL may hold its password.
        let values: Vec<String> = if long == "state" {
            values.iter().map(|v| teller_state::redact(v)).collect()
        } else {
            values
        };
        let line = match (values.as_slice(), arg.get_action().takes_values()) {
            ([], _) => format!("# {long} is unset"),
            ([v], false) => format!("{long} = {}", v == "true"),
            ([v], true) => match v.parse::<i64>() {
                Ok(n) => format!("{long} = {n}"),
                Err(_) => format!("{long} = {}", toml::Value::String(v.clone())),
            },
            (many, _) => format!("{long} = {:?}", many),
        };
        out.push_str(&format!("{line:<56} # {source}\n"));
    }
    // The other secret a setting can hold: the audit key itself.
    if std::env::var_os(teller_audit_log::KEY_ENV).is_some() {
        out.push_str(&format!(
            "# audit key: set in {} (redacted)\n",
            teller_audit_log::KEY_ENV
        ));
    }
    out
}
