//! The `kafka://` URL of a backend: its bootstrap brokers.

/// The bootstrap brokers of a `kafka://HOST:PORT,HOST:PORT` URL.
///
/// ```
/// assert_eq!(logpipe_kafka::brokers_of("kafka://h1:9092,h2:9092").unwrap(), "h1:9092,h2:9092");
/// assert!(logpipe_kafka::brokers_of("kafka://").is_err());
/// assert!(logpipe_kafka::brokers_of("kafka://h1:9092,").is_err());
/// ```
///
/// # Errors
///
/// What is wrong with the URL, as text to show beside the configuration key.
pub fn brokers_of(url: &str) -> Result<String, String> {
    let brokers = url
        .strip_prefix("kafka://")
        .ok_or_else(|| format!("{url:?} is not a kafka:// URL"))?
        .trim_end_matches('/');
    if brokers.is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
        return Err("kafka:// needs brokers, such as kafka://h1:9092,h2:9092".to_owned());
    }
    Ok(brokers.to_owned())
}
