//! URLs as they may be shown: in logs, errors and `--help` output.

/// `url` with its password (in the user part or a `password` parameter) shown as `***`.
///
/// ```
/// assert_eq!(
///     logpipe_core::redact_url("postgres://app:s3cret@db/x?password=s3cret&sslmode=require"),
///     "postgres://app:***@db/x?password=***&sslmode=require"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let mut redacted = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, None), |(a, p)| (a, Some(p)));
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            match path {
                Some(path) => format!("{scheme}://{authority}/{path}"),
                None => format!("{scheme}://{authority}"),
            }
        }
        None => head.to_owned(),
    };
    if url.contains('?') {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
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
