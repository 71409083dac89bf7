//! Dockerfiles read statically (no Docker daemon runs here): stages and
//! their instructions, and the layout a run-time stage gives an image
//! (files, user, entrypoint, working dir, env, ports, labels), to compare
//! with what `deploy/images/build.sh` builds.

use std::collections::BTreeMap;

/// One `FROM` stage: its image, optional name, and its instructions
/// (keyword upper-cased, continuation lines joined).
pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    pub instructions: Vec<(String, String)>,
}

pub fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                other => panic!("unexpected FROM {other:?}"),
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push((keyword, rest));
        }
    }
    stages
}

/// What a run-time stage puts into an image, as `podman image inspect` and
/// the image's files would show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// `USER`, as written (`65532:65532`).
    pub user: String,
    /// `ENTRYPOINT` in exec form.
    pub entrypoint: Vec<String>,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    /// `EXPOSE`d ports as podman lists them (`7070/tcp`).
    pub exposed: Vec<String>,
    /// `LABEL`s, with `$ARG` references replaced by the `ARG` defaults.
    pub labels: BTreeMap<String, String>,
    /// Every `COPY` destination with its `--chown` (if any).
    pub copied: BTreeMap<String, Option<String>>,
}

impl Stage {
    /// The layout this stage gives an image.
    pub fn layout(&self) -> Layout {
        let mut layout = Layout::default();
        let mut args = BTreeMap::new();
        for (keyword, rest) in &self.instructions {
            match keyword.as_str() {
                "USER" => layout.user = rest.clone(),
                "ENTRYPOINT" => {
                    layout.entrypoint = serde_json::from_str(rest)
                        .unwrap_or_else(|_| panic!("ENTRYPOINT is not exec form: {rest}"));
                }
                "WORKDIR" => layout.working_dir = Some(rest.clone()),
                "ARG" => {
                    let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
                    args.insert(name.to_owned(), value.to_owned());
                }
                "ENV" => {
                    for (key, value) in pairs(rest) {
                        layout.env.insert(key, value);
                    }
                }
                "EXPOSE" => {
                    for port in rest.split_whitespace() {
                        let port = if port.contains('/') {
                            port.to_owned()
                        } else {
                            format!("{port}/tcp")
                        };
                        layout.exposed.push(port);
                    }
                }
                "LABEL" => {
                    for (key, mut value) in pairs(rest) {
                        for (name, default) in &args {
                            value = value.replace(&format!("${name}"), default);
                        }
                        layout.labels.insert(key, value);
                    }
                }
                "COPY" => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    let chown = words
                        .iter()
                        .find_map(|w| w.strip_prefix("--chown="))
                        .map(str::to_owned);
                    let dest = words.last().expect("COPY has a destination");
                    layout.copied.insert((*dest).to_owned(), chown);
                }
                _ => {}
            }
        }
        layout.exposed.sort();
        layout
    }
}

/// `k=v k2="v with spaces"` pairs, as ENV and LABEL take them.
fn pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        chars.next(); // '='
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        }
        pairs.push((key.trim().to_owned(), value));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_stage_gives_its_layout() {
        let stages = parse_dockerfile(
            "FROM a AS build\nRUN x\nFROM b\nCOPY --from=build --chown=1:1 /out/d /d\n\
             ARG V=1.2\nLABEL t=\"x y\" \\\n  v=\"$V\"\nUSER 1:1\nENV A=1 B=2\nEXPOSE 80\n\
             ENTRYPOINT [\"/bin/x\"]\n",
        );
        let layout = stages[1].layout();
        assert_eq!(layout.user, "1:1");
        assert_eq!(layout.entrypoint, ["/bin/x"]);
        assert_eq!(layout.labels["t"], "x y");
        assert_eq!(layout.labels["v"], "1.2");
        assert_eq!(layout.env["B"], "2");
        assert_eq!(layout.exposed, ["80/tcp"]);
        assert_eq!(layout.copied["/d"].as_deref(), Some("1:1"));
    }
}
