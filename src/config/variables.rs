//! `LOGPIPE_*` variables laid over the configuration table: each sets the key its name
//! spells (`LOGPIPE_CONSUMER__MAX_RETRIES` is `consumer.max_retries`), its text read as a
//! number or boolean where it looks like one, and as text again where the key wants text.

/// Reads a variable's text as a TOML integer, float or boolean when it is one.
pub(super) fn guess_value(text: &str) -> toml::Value {
    if let Ok(number) = text.parse::<i64>() {
        return toml::Value::Integer(number);
    }
    if let Ok(flag) = text.parse::<bool>() {
        return toml::Value::Boolean(flag);
    }
    if let Ok(number) = text
        .parse::<f64>()
        .map_err(drop)
        .and_then(|n| if n.is_finite() { Ok(n) } else { Err(()) })
    {
        return toml::Value::Float(number);
    }
    toml::Value::String(text.to_owned())
}

pub(super) fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("split always yields one part");
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Turns the non-text value at the dotted `key` into text; false if it was text already.
pub(super) fn retype_as_string(table: &mut toml::Table, key: &str) -> bool {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        let Some(value) = current.get_mut(part) else {
            return false;
        };
        if parts.peek().is_none() {
            let text = match value {
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return false,
            };
            *value = toml::Value::String(text);
            return true;
        }
        let Some(next) = value.as_table_mut() else {
            return false;
        };
        current = next;
    }
    false
}
