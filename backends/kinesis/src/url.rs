//! The `kinesis://` URL of a backend: its region and endpoint.

/// A `kinesis://?region=REGION&endpoint=URL` URL. Both parameters are optional: the
/// region defaults to `AWS_REGION` (then `AWS_DEFAULT_REGION`), the endpoint to AWS's.
///
/// ```
/// use logpipe_kinesis::KinesisUrl;
///
/// let url = KinesisUrl::parse("kinesis://?region=eu-west-1&endpoint=http://127.0.0.1:4567").unwrap();
/// assert_eq!(url.region.as_deref(), Some("eu-west-1"));
/// assert_eq!(url.endpoint.as_deref(), Some("http://127.0.0.1:4567"));
/// assert_eq!(KinesisUrl::parse("kinesis://").unwrap(), KinesisUrl::default());
/// assert!(KinesisUrl::parse("kinesis://aws").is_err());
/// assert!(KinesisUrl::parse("kinesis://?zone=eu").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisUrl {
    /// The AWS region.
    pub region: Option<String>,
    /// Another endpoint than AWS's, such as an emulator.
    pub endpoint: Option<String>,
}

impl KinesisUrl {
    /// Reads a `kinesis://` URL.
    ///
    /// # Errors
    ///
    /// What is wrong with it, as text to show beside the configuration key.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("kinesis://")
            .ok_or_else(|| format!("{url:?} is not a kinesis:// URL"))?;
        let query = match rest.split_once('?') {
            Some(("", query)) => query,
            None if rest.is_empty() => "",
            _ => {
                return Err(format!(
                    "kinesis://{rest} has a host; use kinesis://?region=REGION&endpoint=URL"
                ));
            }
        };
        let mut found = Self::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("kinesis:// parameter {pair:?} has no value"))?;
            if value.is_empty() {
                return Err(format!("kinesis:// parameter {name:?} is empty"));
            }
            match name {
                "region" => found.region = Some(value.to_owned()),
                "endpoint" => found.endpoint = Some(value.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown kinesis:// parameter {name:?} (expected region or endpoint)"
                    ));
                }
            }
        }
        Ok(found)
    }
}
