//! `receipt verify`: an executor's offline check of a decision receipt, and `signing-key
//! rotate`: a new key for the receipts to come.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::fail;
use crate::domain::{ReceiptClaims, params_sha256};

pub(super) const RECEIPT_AFTER: &str = "\
Exit codes (verify):
  0  valid, and the request was approved
  1  valid, and the request was not approved (denied, expired or cancelled)
  2  invalid: a bad signature, an unknown key, expired, params that do not match, unreadable

The keys come from --jwks (a URL or a file holding a JWK Set); without it, from
GREENLIGHT_URL/.well-known/jwks.json [default: http://127.0.0.1:8080]. Save the JWKS where the
executor runs to check receipts with no server at all.

Examples:
  greenlight ask --title \"Deploy api v1.2\" --param version=1.2 --wait --receipt receipt.jwt
  greenlight receipt verify receipt.jwt --params '{\"version\":1.2}'";

#[derive(Debug, Subcommand)]
pub(super) enum ReceiptCommand {
    /// Check a receipt: its signature against the JWKS, its expiry, and optionally the params.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    /// The file holding the receipt (a compact JWS); `-` reads standard input.
    file: String,
    /// Where the public keys are: an http(s) URL or a file with a JWK Set.
    #[arg(long)]
    jwks: Option<String>,
    /// The params the executor is about to act on (a JSON object): they must hash to the
    /// receipt's `params_sha256`.
    #[arg(long)]
    params: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum SigningKeyCommand {
    /// Add a new receipt signing key: every replica signs with it within 10 s and keeps
    /// publishing the old public key while receipts it signed may live (`receipt_ttl`).
    Rotate,
}

pub(super) async fn signing_key(
    cmd: SigningKeyCommand,
    store: &dyn crate::store::Store,
) -> ExitCode {
    match cmd {
        SigningKeyCommand::Rotate => {
            let now = jiff::Timestamp::now().as_millisecond();
            match crate::service::receipts::rotate(store, now).await {
                Ok(kid) => {
                    println!("{kid}");
                    eprintln!(
                        "new receipt signing key {kid}: running servers sign with it within 10 s"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// Exit codes of `receipt verify`.
const VALID_APPROVED: u8 = 0;
const VALID_NOT_APPROVED: u8 = 1;
const INVALID: u8 = 2;

pub(super) async fn receipt(cmd: ReceiptCommand) -> ExitCode {
    let ReceiptCommand::Verify(args) = cmd;
    match verify(&args).await {
        Ok(claims) => {
            println!(
                "receipt valid: request {} {} by {} at {} (workflow {}, act on it until {})",
                claims.sub,
                claims.status,
                claims.decided_by.as_deref().unwrap_or("-"),
                claims.decided_at,
                claims.workflow,
                jiff::Timestamp::from_second(claims.exp)
                    .map_or_else(|_| claims.exp.to_string(), |t| t.to_string()),
            );
            ExitCode::from(if claims.status == "approved" {
                VALID_APPROVED
            } else {
                VALID_NOT_APPROVED
            })
        }
        Err(why) => {
            println!("receipt INVALID: {why}");
            ExitCode::from(INVALID)
        }
    }
}

async fn verify(args: &VerifyArgs) -> Result<ReceiptClaims, String> {
    let text = if args.file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| format!("reading {}: {e}", args.file))?
    };
    let token = text.trim();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("not a receipt (a compact JWS): {e}"))?;
    // Pinned: a receipt is EdDSA; `none`, HMAC or anything else is refused before any key.
    if header.alg != Algorithm::EdDSA {
        return Err(format!("signed with {:?}, not EdDSA", header.alg));
    }
    let kid = header.kid.ok_or("its header names no key (kid)")?;
    let jwks = jwks(args.jwks.as_deref()).await?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("its key {kid} is not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = 60;
    validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
    let data =
        jsonwebtoken::decode::<ReceiptClaims>(token, &key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "it has expired (past its exp): act on a fresh decision".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "its signature does not verify".to_owned()
                }
                _ => format!("it does not verify: {e}"),
            }
        })?;
    let claims = data.claims;
    if let Some(params) = &args.params {
        let params: crate::domain::Params = serde_json::from_str(params)
            .map_err(|e| format!("--params is not a JSON object: {e}"))?;
        let hash = params_sha256(&params);
        if hash != claims.params_sha256 {
            return Err(format!(
                "the params given are not the params approved (sha256 {hash}, receipt {})",
                claims.params_sha256
            ));
        }
    }
    Ok(claims)
}

/// The JWK Set from a URL, a file, or the server at GREENLIGHT_URL.
async fn jwks(from: Option<&str>) -> Result<JwkSet, String> {
    let url = match from {
        Some(path) if !path.starts_with("http://") && !path.starts_with("https://") => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
            return serde_json::from_str(&text).map_err(|e| format!("{path}: not a JWK Set: {e}"));
        }
        Some(url) => url.to_owned(),
        None => {
            let base = std::env::var("GREENLIGHT_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| crate::client::DEFAULT_URL.to_owned());
            format!("{}/.well-known/jwks.json", base.trim_end_matches('/'))
        }
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let res = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("fetching the JWKS from {url}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!(
            "fetching the JWKS from {url}: HTTP {}",
            res.status()
        ));
    }
    res.json()
        .await
        .map_err(|e| format!("{url}: not a JWK Set: {e}"))
}
