//! `keys create | list | revoke`: API keys, on the database itself.

use std::process::ExitCode;

use clap::Subcommand;

use super::{exit, fail};
use crate::domain::{ApiKeyId, key_name_problem};
use crate::http::auth::{generate_key, hash_key};
use crate::store::{self, ApiKey, Scope};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Create a key and print it (alone) on stdout. It is stored only as a hash.
    Create {
        /// A name for the key: its votes and cancels are recorded as `key:NAME`. Not a Slack
        /// id (U…, W…, S…) and without <, >, *, @.
        #[arg(long)]
        name: String,
        /// Comma-separated: request, read, decide, signal, admin.
        #[arg(long, value_delimiter = ',', default_value = "request,read")]
        scopes: Vec<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id (key_...), as `keys list` shows it.
        id: String,
    },
}

pub(super) async fn keys(cmd: KeysCommand, store: &dyn store::ApiKeys) -> ExitCode {
    match cmd {
        KeysCommand::Create { name, scopes } => {
            let name = name.trim().to_owned();
            if let Some(problem) = key_name_problem(&name) {
                eprintln!("error: --name {name:?} {problem}");
                return ExitCode::from(exit::USAGE);
            }
            let mut parsed = Vec::new();
            for s in &scopes {
                match Scope::parse(s.trim()) {
                    Some(scope) if !parsed.contains(&scope) => parsed.push(scope),
                    Some(_) => {}
                    None => {
                        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                        eprintln!("error: unknown scope {s:?}: use {}", known.join(", "));
                        return ExitCode::from(exit::USAGE);
                    }
                }
            }
            let secret = generate_key();
            let key = ApiKey {
                id: ApiKeyId::generate(),
                name,
                scopes: parsed,
                created_at: jiff::Timestamp::now(),
                revoked_at: None,
            };
            match store.insert_api_key(&key, &hash_key(&secret)).await {
                Ok(()) => {
                    eprintln!("created {} ({}); the key is shown once:", key.id, key.name);
                    println!("{secret}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::List => match store.list_api_keys().await {
            Ok(keys) => {
                for k in keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{}\t{}\t{}\t{}", k.id, k.name, scopes.join(","), state);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        KeysCommand::Revoke { id } => {
            let Ok(id) = id.parse::<ApiKeyId>() else {
                eprintln!("error: {id:?} is not a key id (key_...)");
                return ExitCode::from(exit::USAGE);
            };
            match store.revoke_api_key(&id, jiff::Timestamp::now()).await {
                Ok(true) => {
                    eprintln!("revoked {id}");
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(format!("no active key {id}")),
                Err(e) => fail(e),
            }
        }
    }
}
