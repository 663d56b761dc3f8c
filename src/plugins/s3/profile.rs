//! AWS shared config files, read as the AWS tools read them: a profile
//! (`profile=`, else `AWS_PROFILE`, else `default`) from the credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`, sections
//! `[NAME]`) and the config file (`AWS_CONFIG_FILE`, else `~/.aws/config`,
//! sections `[default]` and `[profile NAME]`). Only what the s3 plugin uses:
//! keys, session token, region and endpoint_url. Pure parsing and file
//! reading; must not import object_store, tokio or rhai.

use std::collections::HashMap;
use std::path::PathBuf;

/// What one profile says; every field is optional.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Profile {
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Where the keys came from, for `--dump-plugin` (never the keys).
    pub source: Option<String>,
}

/// The sections of an INI file: name → (key → value). Comments start
/// with `#` or `;`; keys are lower-cased, as the AWS tools treat them.
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            cur = Some(name);
            continue;
        }
        // Indented lines are nested settings (e.g. `s3 =` blocks): skipped.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(sec), Some((k, v))) = (&cur, l.split_once('=')) {
            if let Some(m) = out.get_mut(sec) {
                m.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

fn home_file(env: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rel))
}

/// Read the profile `name` (None: `AWS_PROFILE`, else `default`) from the
/// shared files. A profile asked for by name that neither file has is an
/// error naming both files; missing files are fine for `default`.
pub fn load(name: Option<&str>) -> Result<Profile, String> {
    let env_name = std::env::var("AWS_PROFILE").ok().filter(|s| !s.is_empty());
    let explicit = name.is_some() || env_name.is_some();
    let name = name
        .map(str::to_string)
        .or(env_name)
        .unwrap_or_else(|| "default".into());
    let cred_path = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let conf_path = home_file("AWS_CONFIG_FILE", ".aws/config");
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let (cred, conf) = (read(&cred_path), read(&conf_path));
    let shown = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("(no HOME)".into(), |p| p.display().to_string())
    };
    match resolve(
        &name,
        cred.as_deref(),
        conf.as_deref(),
        &shown(&cred_path),
        &shown(&conf_path),
    ) {
        Some(p) => Ok(p),
        None if !explicit => Ok(Profile::default()),
        None => Err(format!(
            "the AWS profile {name:?} is in neither {} nor {}",
            shown(&cred_path),
            shown(&conf_path)
        )),
    }
}

/// The profile `name` from the two files' texts; None when neither has it.
/// Keys in the credentials file win over keys in the config file.
pub fn resolve(
    name: &str,
    cred: Option<&str>,
    conf: Option<&str>,
    cred_path: &str,
    conf_path: &str,
) -> Option<Profile> {
    let cred = cred.map(parse_ini).unwrap_or_default();
    let conf = conf.map(parse_ini).unwrap_or_default();
    let conf_section = if name == "default" {
        conf.get("default")
    } else {
        conf.get(&format!("profile {name}"))
            .or_else(|| conf.get(name))
    };
    let cred_section = cred.get(name);
    if cred_section.is_none() && conf_section.is_none() {
        return None;
    }
    let get = |k: &str| -> (Option<String>, Option<&str>) {
        if let Some(v) = cred_section.and_then(|s| s.get(k)) {
            return (Some(v.clone()), Some(cred_path));
        }
        match conf_section.and_then(|s| s.get(k)) {
            Some(v) => (Some(v.clone()), Some(conf_path)),
            None => (None, None),
        }
    };
    let (access_key, from) = get("aws_access_key_id");
    Some(Profile {
        source: from.map(|f| format!("profile {name} in {f}")),
        access_key,
        secret_key: get("aws_secret_access_key").0,
        session_token: get("aws_session_token").0,
        region: get("region").0,
        endpoint_url: get("endpoint_url").0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRED: &str =
        "# keys\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=sdef\n\n\
                        [work]\nAWS_ACCESS_KEY_ID = AKWORK\naws_secret_access_key = swork\n\
                        aws_session_token = tok\n";
    const CONF: &str = "[default]\nregion = eu-west-1\n[profile work]\nregion = us-west-2\n\
                        endpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n\
                        [profile confonly]\naws_access_key_id = AKC\naws_secret_access_key = sc\n";

    #[test]
    fn profiles_from_both_files() {
        let d = resolve("default", Some(CRED), Some(CONF), "C", "F").unwrap();
        assert_eq!(d.access_key.as_deref(), Some("AKDEF"));
        assert_eq!(d.secret_key.as_deref(), Some("sdef"));
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        assert_eq!(d.session_token, None);
        assert_eq!(d.source.as_deref(), Some("profile default in C"));
        let w = resolve("work", Some(CRED), Some(CONF), "C", "F").unwrap();
        assert_eq!(w.access_key.as_deref(), Some("AKWORK"));
        assert_eq!(w.session_token.as_deref(), Some("tok"));
        assert_eq!(w.region.as_deref(), Some("us-west-2"));
        assert_eq!(w.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        let c = resolve("confonly", Some(CRED), Some(CONF), "C", "F").unwrap();
        assert_eq!(c.access_key.as_deref(), Some("AKC"));
        assert_eq!(c.source.as_deref(), Some("profile confonly in F"));
        assert_eq!(resolve("nope", Some(CRED), Some(CONF), "C", "F"), None);
        assert_eq!(resolve("default", None, None, "C", "F"), None);
    }

    #[test]
    fn nested_and_odd_lines_are_ignored() {
        let m = parse_ini("junk before\n[a]\nk=v=w\n  nested = x\nnovalue\n; c\n");
        assert_eq!(m["a"].get("k").map(String::as_str), Some("v=w"));
        assert_eq!(m["a"].len(), 1);
    }
}
