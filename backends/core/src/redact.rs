//! URLs as they may be shown: in logs, errors and `--help` output.

/// `url` with its password (in the user part or a `password` parameter) shown as `***`.
///
/// It fails closed: the user part ends at the last `@`, so a password holding `/`, `?`
/// or `@` is hidden whole, and text with an `@` that is not a URL at all is hidden
/// entirely.
///
/// ```
/// assert_eq!(
///     logpipe_core::redact_url("postgres://app:s3cret@db/x?password=s3cret&sslmode=require"),
///     "postgres://app:***@db/x?password=***&sslmode=require"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "***".to_owned()
        } else {
            url.to_owned()
        };
    };
    let (user_info, host_and_rest) = match rest.rsplit_once('@') {
        Some((user_info, host)) => (Some(user_info), host),
        None => (None, rest),
    };
    let mut redacted = format!("{scheme}://");
    if let Some(user_info) = user_info {
        match user_info.split_once(':') {
            Some((user, _)) => redacted.push_str(&format!("{user}:***@")),
            None => redacted.push_str(&format!("{user_info}@")),
        }
    }
    match host_and_rest.split_once('?') {
        Some((host, query)) => {
            let pairs: Vec<&str> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***",
                    _ => pair,
                })
                .collect();
            redacted.push_str(host);
            redacted.push('?');
            redacted.push_str(&pairs.join("&"));
        }
        None => redacted.push_str(host_and_rest),
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_password_is_hidden() {
        for (url, shown) in [
            ("postgres://db/x", "postgres://db/x"),
            ("postgres://app@db", "postgres://app@db"),
            (
                "kafka://user:secret@h1:9092,h2:9092",
                "kafka://user:***@h1:9092,h2:9092",
            ),
            ("sqlite://people.db", "sqlite://people.db"),
            (
                "postgres://a:b@db/x?sslmode=require",
                "postgres://a:***@db/x?sslmode=require",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
