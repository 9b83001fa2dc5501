//! Account-number masking: what the audit log stores and what any error
//! message may quote. Only the last four digits stay readable.

/// Digit runs at least this long in free text are treated as account numbers.
pub const ACCOUNT_DIGITS: usize = 12;

/// Masks every digit but the last four: a resource names an account.
pub fn account(value: &str) -> String {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let mut to_mask = digits.saturating_sub(4);
    value
        .chars()
        .map(|c| {
            if to_mask > 0 && c.is_ascii_digit() {
                to_mask -= 1;
                '*'
            } else {
                c
            }
        })
        .collect()
}

/// Masks, in free text, each run of [`ACCOUNT_DIGITS`] or more digits but
/// its last four.
pub fn digit_runs(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if run == 0 {
            // Copy one whole character; digits are ASCII so this stays on
            // character boundaries.
            let ch = value
                .get(start..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or('\u{fffd}');
            out.push(ch);
            start += ch.len_utf8().max(1);
            continue;
        }
        let digits = value.get(start..start + run).unwrap_or_default();
        if run >= ACCOUNT_DIGITS {
            out.extend(std::iter::repeat_n('*', run - 4));
            out.push_str(digits.get(run - 4..).unwrap_or_default());
        } else {
            out.push_str(digits);
        }
        start += run;
    }
    out
}
