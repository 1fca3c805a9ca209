//! How the admin commands of the CLI print an answer: `-o json` (the admin API's document as
//! it is, for scripts) or `-o table` (aligned columns for a list, `field  value` lines for one
//! record, times as dates and ages). `auto`, the default, is a table on a terminal and JSON
//! when the output is piped, so scripts never parse a table by accident.

use std::fmt::Write as _;
use std::io::IsTerminal;

use serde_json::{Map, Value};

/// `-o` / `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Columns for lists, `field  value` lines for one record; human times.
    Table,
    /// The admin API's JSON document, pretty-printed.
    Json,
}

impl OutputFormat {
    /// `auto` decided by whether standard output is a terminal.
    pub fn resolved(self) -> OutputFormat {
        match self {
            OutputFormat::Auto if std::io::stdout().is_terminal() => OutputFormat::Table,
            OutputFormat::Auto => OutputFormat::Json,
            other => other,
        }
    }

    /// The text to print for an answer (ends with a newline).
    pub fn render(self, value: &Value, now_ms: u64) -> String {
        match self.resolved() {
            OutputFormat::Json | OutputFormat::Auto => {
                let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
                text.push('\n');
                text
            }
            OutputFormat::Table => table(value, now_ms),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A whole answer as tables: a list becomes one table; a record becomes `field  value` lines
/// followed by one table per field holding a list of records.
pub fn table(value: &Value, now_ms: u64) -> String {
    let mut out = String::new();
    match value {
        Value::Array(rows) => rows_table(&mut out, rows, now_ms),
        Value::Object(fields) => {
            let mut lists = Vec::new();
            let mut lines = Vec::new();
            flatten(&mut lines, "", fields, &mut lists, now_ms);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, text) in &lines {
                let _ = writeln!(out, "{key:<width$}  {text}");
            }
            for (key, rows) in lists {
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}:", key.to_uppercase());
                rows_table(&mut out, rows, now_ms);
            }
        }
        other => {
            let _ = writeln!(out, "{}", cell("", other, now_ms));
        }
    }
    out
}

/// `field  value` lines of a record, nested records as `a.b`; a list of records is kept apart
/// to be shown as a table of its own.
fn flatten<'a>(
    lines: &mut Vec<(String, String)>,
    prefix: &str,
    fields: &'a Map<String, Value>,
    lists: &mut Vec<(String, &'a [Value])>,
    now_ms: u64,
) {
    // `id` and `name` lead, the rest in order (the admin API's documents keep theirs sorted).
    let leading = ["id", "name"]
        .into_iter()
        .filter_map(|k| fields.get_key_value(k));
    let rest = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "id" && k.as_str() != "name");
    for (name, value) in leading.chain(rest) {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(lines, &key, inner, lists, now_ms),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                lists.push((key, items))
            }
            _ => lines.push((key.clone(), cell(name, value, now_ms))),
        }
    }
}

/// A list of records as aligned columns (the fields in order of first appearance); other
/// values one per line.
fn rows_table(out: &mut String, rows: &[Value], now_ms: u64) {
    if rows.is_empty() {
        out.push_str("(none)\n");
        return;
    }
    if !rows.iter().all(Value::is_object) {
        for row in rows {
            let _ = writeln!(out, "{}", cell("", row, now_ms));
        }
        return;
    }
    // `id` and `name` lead, the rest in order of first appearance.
    let mut columns: Vec<&str> = ["id", "name"]
        .into_iter()
        .filter(|c| rows.iter().any(|r| r.get(*c).is_some()))
        .collect();
    for row in rows {
        for name in row.as_object().into_iter().flat_map(Map::keys) {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| cell(c, row.get(*c).unwrap_or(&Value::Null), now_ms))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut String, texts: &mut dyn Iterator<Item = String>| {
        let mut text = String::new();
        for (i, t) in texts.enumerate() {
            let pad = widths[i].saturating_sub(t.chars().count());
            text.push_str(&t);
            if i + 1 < widths.len() {
                text.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(out, &mut columns.iter().map(|c| c.to_uppercase()));
    for row in cells {
        line(out, &mut row.into_iter());
    }
}

/// One value as table text. Fields named `…_ms` holding a time since the epoch (after 2001)
/// read as a UTC date with its age; other `…_ms` as a duration.
fn cell(name: &str, value: &Value, now_ms: u64) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => match (name.ends_with("_ms"), n.as_u64()) {
            (true, Some(ms)) if ms >= 1_000_000_000_000 => human_time(ms, now_ms),
            (true, Some(ms)) => {
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            }
            _ => n.to_string(),
        },
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => items
            .iter()
            .map(|v| cell(name, v, now_ms))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => format!("[{} items]", items.len()),
        Value::Object(_) => {
            let text = value.to_string();
            if text.chars().count() > 60 {
                format!("{}…", text.chars().take(59).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// `2026-12-01 10:17:17Z (3h 5m ago)` or `(in 2days)`, to the second.
fn human_time(ms: u64, now_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let date = humantime::format_rfc3339_seconds(at)
        .to_string()
        .replacen('T', " ", 1);
    let coarse = |d: u64| {
        // Two largest units are enough to read an age.
        let text = humantime::format_duration(std::time::Duration::from_secs(d / 1000)).to_string();
        text.split(' ').take(2).collect::<Vec<_>>().join(" ")
    };
    if ms + 1000 <= now_ms {
        format!("{date} ({} ago)", coarse(now_ms - ms))
    } else if ms >= now_ms + 1000 {
        format!("{date} (in {})", coarse(ms - now_ms))
    } else {
        format!("{date} (now)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_764_584_237_000; // 2025-12-01T10:17:17Z

    #[test]
    fn a_list_is_aligned_columns_with_human_times_and_durations() {
        let text = table(
            &json!([
                { "id": "k1", "created_at_ms": NOW - 3_600_000 - 120_000, "expires_at_ms": null, "window_ms": 60_000 },
                { "id": "key-two", "created_at_ms": NOW, "revoked": true, "scopes": ["a", "b"] },
            ]),
            NOW,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID       CREATED_AT_MS                     EXPIRES_AT_MS  WINDOW_MS  REVOKED  SCOPES"
        );
        assert_eq!(
            lines[1],
            "k1       2025-12-01 09:15:17Z (1h 2m ago)  -              1m         -        -"
        );
        assert_eq!(
            lines[2],
            "key-two  2025-12-01 10:17:17Z (now)        -              -          yes      a, b"
        );
    }

    #[test]
    fn a_record_is_field_value_lines_then_its_lists_as_tables() {
        let text = table(
            &json!({
                "name": "orders",
                "limits": { "rate": 10, "sunset_ms": NOW + 2 * 86_400_000 },
                "keys": [{ "id": "a" }, { "id": "b" }],
                "empty": [],
            }),
            NOW,
        );
        assert_eq!(
            text,
            "name              orders\n\
             empty             -\n\
             limits.rate       10\n\
             limits.sunset_ms  2025-12-03 10:17:17Z (in 2days)\n\
             \n\
             KEYS:\n\
             ID\n\
             a\n\
             b\n"
        );
    }

    #[test]
    fn an_empty_list_says_none() {
        assert_eq!(table(&json!([]), NOW), "(none)\n");
    }

    #[test]
    fn json_is_the_document_as_it_is() {
        let value = json!({ "a": [1, 2] });
        let text = OutputFormat::Json.render(&value, NOW);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
}
