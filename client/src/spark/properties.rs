//! Java `.properties` files, as `--properties-file` takes them (the subset
//! Spark users write: `key=value`, `key value`, `key: value`, comments, and
//! backslash line continuations).

use std::collections::BTreeMap;

pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':', ' ', '\t']);
        let (key, value) = match split {
            Some(i) => {
                let rest = entry[i..].trim_start();
                let rest = rest
                    .strip_prefix('=')
                    .or_else(|| rest.strip_prefix(':'))
                    .unwrap_or(rest);
                (entry[..i].trim(), rest.trim())
            }
            None => (entry.trim(), ""),
        };
        if !key.is_empty() {
            out.insert(key.to_owned(), value.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_separator_and_continuation_is_understood() {
        let p = parse(
            "# c\n! c\nspark.jars=a.jar,\\\n   b.jar\nspark.files : x.txt\nspark.master local[1]\n\nempty\n",
        );
        assert_eq!(p["spark.jars"], "a.jar,b.jar");
        assert_eq!(p["spark.files"], "x.txt");
        assert_eq!(p["spark.master"], "local[1]");
        assert_eq!(p["empty"], "");
        assert_eq!(p.len(), 4);
    }
}
