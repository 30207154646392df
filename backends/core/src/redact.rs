//! Secrets kept out of what is shown: in logs, errors and `--help` output. One rule says
//! which configuration keys hold secrets ([`is_secret_key`]); URLs lose their passwords
//! ([`redact_url`]).

/// Whether the value of the configuration key `key` is a secret, never to be shown:
/// a key whose name has `password`, `secret`, `token` or `credential` in it (such as
/// librdkafka's `sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`,
/// or AWS's `secret_access_key` and `session_token`), a private key (`ssl.key.pem`), or
/// librdkafka's `sasl.oauthbearer.config`, which may carry a token.
///
/// ```
/// use logpipe_core::is_secret_key;
/// assert!(is_secret_key("sasl.password"));
/// assert!(is_secret_key("AWS_SECRET_ACCESS_KEY"));
/// assert!(!is_secret_key("sasl.username"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("key.pem")
        || key == "sasl.oauthbearer.config"
}

/// `value` as the value of `key` may be shown: `***` when [`is_secret_key`].
pub fn redact_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) { "***" } else { value }
}

/// `url` with its password (in the user part, or a parameter whose name
/// [`is_secret_key`]) shown as `***`.
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
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_key(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
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
                "kinesis://?region=eu-west-1&session_token=t0k",
                "kinesis://?region=eu-west-1&session_token=***",
            ),
            (
                "postgres://a:b@db/x?sslmode=require",
                "postgres://a:***@db/x?sslmode=require",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn secret_keys_are_known_by_their_names() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "secret_access_key",
            "AWS_SESSION_TOKEN",
            "password",
        ] {
            assert!(is_secret_key(key), "{key}");
            assert_eq!(redact_value(key, "x"), "***");
        }
        for key in [
            "sasl.username",
            "sasl.mechanism",
            "ssl.ca.location",
            "linger.ms",
        ] {
            assert!(!is_secret_key(key), "{key}");
            assert_eq!(redact_value(key, "x"), "x");
        }
    }
}
