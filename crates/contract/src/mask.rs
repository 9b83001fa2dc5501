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
    // Most text has no run that long: one copy, no walk by character.
    let longest = bytes
        .split(|b| !b.is_ascii_digit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    if longest < ACCOUNT_DIGITS {
        return value.to_string();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_twelve_digits_or_more_keep_only_their_last_four() {
        assert_eq!(digit_runs("no digits, ünïcode"), "no digits, ünïcode");
        assert_eq!(digit_runs("acct 12345678901 ok"), "acct 12345678901 ok");
        assert_eq!(digit_runs("acct 123456789012 ok"), "acct ********9012 ok");
        assert_eq!(
            digit_runs("é6222020200112233445,99887766554433221"),
            "é***************3445,*************3221"
        );
        assert_eq!(digit_runs("123456789012"), "********9012");
    }

    #[test]
    fn an_account_keeps_only_its_last_four_digits() {
        assert_eq!(account("6222-0202-0011-2233"), "****-****-****-2233");
        assert_eq!(account("acct-12"), "acct-12");
    }
}
