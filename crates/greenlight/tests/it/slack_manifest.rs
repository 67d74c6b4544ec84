//! `greenlight slack-manifest`: the Slack app an operator creates, checked against Slack's app
//! manifest reference (required keys, types, limits, no unknown keys) in both transports, as
//! YAML and as JSON, and through the "create an app" link.

use std::process::Output;

use greenlight::slack::manifest::BOT_SCOPES;
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Value, json};

use crate::helpers::bin;

fn manifest(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .arg("slack-manifest")
        .args(args)
        .env_remove("GREENLIGHT_CONFIG")
        .output()
        .expect("runs")
}

/// The YAML as the JSON value it stands for (what Slack reads from either).
fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => json!(b),
        Yaml::Value(Scalar::Integer(i)) => json!(i),
        Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => json!(s),
        Yaml::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match k {
                    Yaml::Value(Scalar::String(k)) => (k.to_string(), yaml_to_json(v)),
                    other => panic!("a non-string key {other:?}"),
                })
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// The part of Slack's app manifest reference greenlight's manifest uses (the schema Slack's
/// reference page describes, as SchemaStore's slack-app-manifest.json and Slack's
/// @slack/web-api Manifest types transcribe it): types, required keys, limits, and no key the
/// reference does not know.
fn reference() -> Value {
    let string = |max: usize| json!({"type": "string", "maxLength": max});
    let url = json!({"type": "string", "format": "https"});
    let strings = |max_items: usize| json!({"type": "array", "items": {"type": "string"}, "maxItems": max_items});
    let boolean = json!({"type": "boolean"});
    json!({
        "type": "object",
        "required": ["display_information"],
        "properties": {
            "_metadata": {"type": "object", "properties": {
                "major_version": {"type": "integer", "enum": [1, 2]},
                "minor_version": {"type": "integer"},
            }},
            "display_information": {"type": "object", "required": ["name"], "properties": {
                "name": string(35),
                "description": string(140),
                "long_description": {"type": "string", "minLength": 174, "maxLength": 4000},
                "background_color": {"type": "string", "format": "hex-colour"},
            }},
            "features": {"type": "object", "properties": {
                "app_home": {"type": "object", "properties": {
                    "home_tab_enabled": boolean,
                    "messages_tab_enabled": boolean,
                    "messages_tab_read_only_enabled": boolean,
                }},
                "bot_user": {"type": "object", "required": ["display_name"], "properties": {
                    "display_name": {"type": "string", "maxLength": 80, "format": "bot-name"},
                    "always_online": boolean,
                }},
                "slash_commands": {"type": "array", "maxItems": 50, "items": {
                    "type": "object", "required": ["command", "description"], "properties": {
                        "command": {"type": "string", "maxLength": 32, "format": "command"},
                        "description": string(2000),
                        "should_escape": boolean,
                        "url": url,
                        "usage_hint": string(1000),
                    }}},
                "unfurl_domains": strings(5),
            }},
            "oauth_config": {"type": "object", "properties": {
                "redirect_urls": strings(1000),
                "scopes": {"type": "object", "properties": {
                    "bot": strings(255),
                    "user": strings(255),
                }},
            }},
            "settings": {"type": "object", "properties": {
                "allowed_ip_address_ranges": strings(50),
                "event_subscriptions": {"type": "object", "properties": {
                    "request_url": url,
                    "bot_events": strings(100),
                    "user_events": strings(100),
                }},
                "interactivity": {"type": "object", "required": ["is_enabled"], "properties": {
                    "is_enabled": boolean,
                    "request_url": url,
                    "message_menu_options_url": url,
                }},
                "org_deploy_enabled": boolean,
                "socket_mode_enabled": boolean,
                "token_rotation_enabled": boolean,
            }},
        },
    })
}

/// Every way `value` breaks `schema`, by path.
fn violations(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap();
    let fits = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64(),
        _ => unreachable!("{ty}"),
    };
    if !fits {
        out.push(format!("{path}: expected {ty}, got {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
            out.push(format!("{path}: longer than {}", schema["maxLength"]));
        }
        if schema["minLength"].as_u64().is_some_and(|min| len < min) {
            out.push(format!("{path}: shorter than {}", schema["minLength"]));
        }
        let formatted = match schema["format"].as_str() {
            None => true,
            Some("https") => s.starts_with("https://") && !s.contains(' '),
            Some("hex-colour") => s.strip_prefix('#').is_some_and(|h| {
                (h.len() == 3 || h.len() == 6) && h.chars().all(|c| c.is_ascii_hexdigit())
            }),
            Some("bot-name") => s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)),
            Some("command") => s.starts_with('/'),
            Some(other) => unreachable!("{other}"),
        };
        if !formatted {
            out.push(format!("{path}: {s:?} is not a {}", schema["format"]));
        }
    }
    if let Some(items) = value.as_array() {
        if schema["maxItems"]
            .as_u64()
            .is_some_and(|max| items.len() as u64 > max)
        {
            out.push(format!("{path}: more than {} items", schema["maxItems"]));
        }
        for (i, item) in items.iter().enumerate() {
            violations(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(map) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(key.as_str().unwrap()) {
                out.push(format!("{path}: {key} is required"));
            }
        }
        for (key, v) in map {
            let child = format!("{path}.{key}");
            match schema["properties"].get(key) {
                Some(s) => violations(s, v, &child, out),
                None => out.push(format!("{child}: not in the reference")),
            }
        }
    }
}

/// Both transports, both formats: the same manifest, valid against the reference, with exactly
/// greenlight's scopes and the URLs (or none) each transport needs.
#[test]
fn the_manifest_follows_slacks_reference_in_both_transports() {
    let base = "https://greenlight.example.com";
    for (args, socket_mode) in [
        (vec!["--request-url", base], false),
        (vec!["--socket-mode"], true),
        (vec![], true),
    ] {
        let yaml_out = manifest(&args);
        assert_eq!(yaml_out.status.code(), Some(0), "{yaml_out:?}");
        let yaml_text = String::from_utf8(yaml_out.stdout).unwrap();
        let docs = Yaml::load_from_str(&yaml_text).expect("the YAML parses");
        assert_eq!(docs.len(), 1, "{yaml_text}");
        let from_yaml = yaml_to_json(&docs[0]);

        let json_out = manifest(&[args.as_slice(), &["--json"]].concat());
        assert_eq!(json_out.status.code(), Some(0), "{json_out:?}");
        let from_json: Value = serde_json::from_slice(&json_out.stdout).expect("the JSON parses");
        assert_eq!(from_yaml, from_json, "YAML and JSON say the same");

        let mut problems = Vec::new();
        violations(&reference(), &from_json, "manifest", &mut problems);
        assert!(problems.is_empty(), "{args:?}: {problems:#?}");

        let m = &from_json;
        assert_eq!(m["display_information"]["name"], "greenlight");
        assert_eq!(m["features"]["bot_user"]["display_name"], "greenlight");
        assert_eq!(m["features"]["app_home"]["home_tab_enabled"], true);
        assert_eq!(m["features"]["slash_commands"][0]["command"], "/greenlight");
        assert_eq!(m["settings"]["interactivity"]["is_enabled"], true);
        assert_eq!(
            m["settings"]["event_subscriptions"]["bot_events"],
            json!(["app_home_opened"])
        );
        assert_eq!(
            m["oauth_config"]["scopes"]["bot"],
            json!([
                "chat:write",
                "im:write",
                "users:read",
                "users:read.email",
                "usergroups:read",
                "channels:read",
                "groups:read",
                "channels:history",
                "groups:history",
                "commands",
            ])
        );
        assert_eq!(m["settings"]["socket_mode_enabled"], socket_mode);
        let urls = [
            &m["settings"]["interactivity"]["request_url"],
            &m["settings"]["event_subscriptions"]["request_url"],
            &m["features"]["slash_commands"][0]["url"],
        ];
        if socket_mode {
            // Slack delivers all three over the socket; a request URL would be refused.
            assert!(urls.iter().all(|u| u.is_null()), "{m:#}");
        } else {
            // Without Socket Mode Slack requires each of them.
            assert_eq!(
                urls.map(|u| u.as_str().unwrap().to_owned()),
                [
                    format!("{base}/slack/interactions"),
                    format!("{base}/slack/events"),
                    format!("{base}/slack/commands"),
                ]
            );
        }

        // Each scope says why it is there, as a comment on its line.
        for scope in BOT_SCOPES {
            assert!(
                yaml_text.contains(&format!("- {}  # {}\n", scope.name, scope.why)),
                "{yaml_text}"
            );
        }

        // The link opens Slack's "create an app" page with this very manifest.
        let stderr = String::from_utf8(json_out.stderr).unwrap();
        let link = stderr
            .split_whitespace()
            .find(|w| w.starts_with("https://api.slack.com/apps?"))
            .unwrap_or_else(|| panic!("no link in {stderr}"));
        let encoded = link
            .strip_prefix("https://api.slack.com/apps?new_app=1&manifest_json=")
            .expect("new_app=1&manifest_json=");
        let decoded: Value =
            serde_json::from_str(&urlencoding::decode(encoded).unwrap()).expect("JSON in link");
        assert_eq!(decoded, from_json);
        let token = if socket_mode {
            "SLACK_APP_TOKEN"
        } else {
            "SLACK_SIGNING_SECRET"
        };
        assert!(
            stderr.contains("SLACK_BOT_TOKEN") && stderr.contains(token),
            "{stderr}"
        );
    }
}

#[test]
fn a_request_url_must_be_https_and_the_transports_exclude_each_other() {
    for args in [
        vec!["--request-url", "http://greenlight.example.com"],
        vec!["--request-url", "greenlight.example.com"],
        vec!["--request-url", "https://greenlight.example.com/?a=1"],
        vec![
            "--socket-mode",
            "--request-url",
            "https://greenlight.example.com",
        ],
    ] {
        let out = manifest(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = manifest(&["--request-url", "http://greenlight.example.com"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not https"));
}

/// The README's set-up names the same scopes the manifest asks for, and no other.
#[test]
fn the_readme_names_exactly_the_manifests_scopes() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/slack.md"))
            .unwrap();
    let start = readme
        .find("## Running against real Slack")
        .expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    for scope in BOT_SCOPES {
        assert!(
            section.contains(&format!("`{}`", scope.name)),
            "README lacks {}",
            scope.name
        );
    }
    for quoted in section.split('`').skip(1).step_by(2) {
        // Slack scopes read `resource:verb[.detail]` (users:read.email, chat:write).
        let looks_like_scope = quoted.split_once(':').is_some_and(|(resource, verb)| {
            resource
                .chars()
                .all(|c| c.is_ascii_lowercase() || "._".contains(c))
                && ["read", "write", "history"].contains(&verb.split('.').next().unwrap_or(""))
        });
        if looks_like_scope {
            assert!(
                quoted == "connections:write" || BOT_SCOPES.iter().any(|s| s.name == quoted),
                "README names {quoted}, which the manifest does not ask for"
            );
        }
    }
}
