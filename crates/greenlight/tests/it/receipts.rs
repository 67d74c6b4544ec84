//! Signed decision receipts: made when a request is decided, published keys, checked by a
//! stock JOSE library (jsonwebtoken) and by `greenlight receipt verify`, carried by callbacks,
//! kept verifiable across a key rotation, and the same on every replica.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

async fn jwks(http: &reqwest::Client, base: &str) -> JwkSet {
    let res = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no key needed");
    res.json().await.unwrap()
}

/// The claims of `receipt`, checked the way an executor's own code would: alg pinned to EdDSA,
/// the key found by `kid` in the JWKS.
fn check(receipt: &str, keys: &JwkSet) -> Value {
    let header = jsonwebtoken::decode_header(receipt).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("a kid");
    let jwk = keys
        .find(&kid)
        .unwrap_or_else(|| panic!("key {kid} is published"));
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Value>(receipt, &key, &validation)
        .expect("the receipt verifies")
        .claims
}

/// `GET /v1/requests/{id}/receipt`.
async fn receipt_of(app: &TestApp, id: &str) -> (u16, Value) {
    app.call(
        reqwest::Method::GET,
        &format!("/v1/requests/{id}/receipt"),
        None,
    )
    .await
}

fn kid(receipt: &str) -> String {
    jsonwebtoken::decode_header(receipt).unwrap().kid.unwrap()
}

async fn approve(app: &TestApp, id: &str, user: &str) -> Value {
    let msg = app.posted(id).await;
    assert!(app.click(&msg, "greenlight.approve", user).await.acked());
    let got = app.get(id).await;
    assert_eq!(got["status"], "approved", "{got}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_request_carries_a_receipt_its_params_and_the_jwks_prove() {
    let app =
        spawn_app_with(|c| c.public_url = Some("https://greenlight.example.com".into())).await;
    let params = json!({"version": "1.2", "replicas": 3, "env": {"region": "eu", "zone": "b"}});
    let (status, created) = app
        .create(json!({"title": "Deploy api v1.2", "params": params, "requester": "ci"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created.get("receipt").is_none(), "none while pending");
    let (status, body) = receipt_of(&app, &id).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_decided");

    let got = approve(&app, &id, "U0ALICE").await;
    let receipt = got["receipt"]
        .as_str()
        .expect("a receipt once decided")
        .to_owned();
    let (status, body) = receipt_of(&app, &id).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["receipt"],
        receipt.as_str(),
        "the same bytes every time"
    );

    let claims = check(&receipt, &jwks(&app.http, &app.base).await);
    assert_eq!(claims["iss"], "https://greenlight.example.com");
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["status"], "approved");
    assert_eq!(claims["decided_by"], "U0ALICE");
    assert_eq!(claims["workflow"], "deploy");
    assert_eq!(claims["requester"], "ci");
    assert_eq!(claims["decided_at"], got["decided_at"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600,
        "receipt_ttl defaults to an hour"
    );
    let params: greenlight::domain::Params = serde_json::from_value(params).unwrap();
    assert_eq!(
        claims["params_sha256"],
        greenlight::domain::params_sha256(&params).as_str()
    );

    // A receipt edited after signing does not verify.
    let mut parts: Vec<String> = receipt.split('.').map(str::to_owned).collect();
    let mut forged = claims.clone();
    forged["status"] = "approved".into();
    forged["sub"] = "req_01SOMETHINGELSE".into();
    parts[1] = base64_url(&forged.to_string());
    let forged = parts.join(".");
    let keys = jwks(&app.http, &app.base).await;
    let jwk = keys.find(&kid(&receipt)).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp"]);
    assert!(
        jsonwebtoken::decode::<Value>(&forged, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .is_err()
    );
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// `greenlight receipt verify`: 0 valid and approved, 1 valid and not approved, 2 invalid
/// (tampered, params that are not the approved ones, a key not in the JWKS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_verify_exits_with_what_the_receipt_proves() {
    let app = spawn_app_with(|c| c.workflows[0].receipt_ttl = "10m".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_url = format!("{}/.well-known/jwks.json", app.base);
    let verify = |file: &std::path::Path, extra: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(["receipt", "verify"])
            .arg(file)
            .args(["--jwks", &jwks_url])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let approved = app
        .create(json!({"title": "Pay invoice 7", "params": {"amount": 1200, "to": "ACME"}}))
        .await
        .1;
    let id = approved["id"].as_str().unwrap().to_owned();
    let receipt = approve(&app, &id, "U0BOB").await["receipt"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = dir.path().join("approved.jwt");
    std::fs::write(&file, &receipt).unwrap();
    let (code, out) = verify(&file, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("request {id} approved by U0BOB")),
        "{out}"
    );
    let (code, out) = verify(&file, &["--params", r#"{"to":"ACME","amount":1200}"#]);
    assert_eq!(code, Some(0), "the same params in another order: {out}");
    let (code, out) = verify(&file, &["--params", r#"{"to":"EVIL","amount":1200}"#]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not the params approved"), "{out}");

    // Tampered: one character of the payload changed.
    let mut bytes = receipt.into_bytes();
    let middle = bytes.iter().position(|b| *b == b'.').unwrap() + 10;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    let tampered = dir.path().join("tampered.jwt");
    std::fs::write(&tampered, &bytes).unwrap();
    assert_eq!(verify(&tampered, &[]).0, Some(2));

    // Denied: valid, not approved.
    let denied = app.create_ok("Pay invoice 8").await;
    let denied_id = denied["id"].as_str().unwrap();
    let msg = app.posted(denied_id).await;
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let got = app.get(denied_id).await;
    let file = dir.path().join("denied.jwt");
    std::fs::write(&file, got["receipt"].as_str().unwrap()).unwrap();
    let (code, out) = verify(&file, &[]);
    assert_eq!(code, Some(1), "{out}");

    // Checked against another server's keys: its key is unknown there.
    let other = spawn_app().await;
    let out = std::process::Command::new(bin())
        .args(["receipt", "verify"])
        .arg(dir.path().join("approved.jwt"))
        .args(["--jwks", &format!("{}/.well-known/jwks.json", other.base)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not in the JWKS"));

    // A JWKS saved to a file works with no server at all.
    let saved = dir.path().join("jwks.json");
    std::fs::write(
        &saved,
        serde_json::to_string(&jwks(&app.http, &app.base).await).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["receipt", "verify"])
        .arg(dir.path().join("approved.jwt"))
        .arg("--jwks")
        .arg(&saved)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// Callbacks carry the receipt once decided; after `signing-key rotate` new decisions are
/// signed with the new key within 10 s and the old receipts still verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_carry_it_and_a_rotation_keeps_old_receipts_verifiable() {
    let machine = Receiver::start(&[], 200).await;
    let app = spawn_app_with(|c| c.delivery.allow_private_targets = true).await;
    let created = app
        .create(json!({"title": "Deploy web v9", "callback_url": machine.url("/hook")}))
        .await
        .1;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = approve(&app, &id, "U0ALICE").await["receipt"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = machine
        .wait_for(WAIT, |r| {
            r.iter().any(|r| r.json()["type"] == "request.approved")
        })
        .await;
    let event = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "request.approved")
        .unwrap();
    assert_eq!(event["receipt"], first.as_str());
    let created_event = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "request.created")
        .unwrap();
    assert!(created_event.get("receipt").is_none());

    let rotated = greenlight_on(&app.db_url, &["signing-key", "rotate"]);
    assert!(rotated.status.success());
    let new_kid = String::from_utf8_lossy(&rotated.stdout).trim().to_owned();
    assert_ne!(new_kid, kid(&first));
    let start = Instant::now();
    let second = loop {
        let id = app.create_ok("Deploy web v10").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let receipt = approve(&app, &id, "U0ALICE").await["receipt"]
            .as_str()
            .unwrap()
            .to_owned();
        if kid(&receipt) == new_kid {
            break receipt;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still signing with the old key 15 s after the rotation"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let keys = jwks(&app.http, &app.base).await;
    assert_eq!(keys.keys.len(), 2, "the old key stays published");
    check(&first, &keys);
    check(&second, &keys);
    // The first request's receipt is still the one signed with the old key.
    assert_eq!(app.get(&id).await["receipt"], first.as_str());
}

/// Two replicas on one PostgreSQL database share the key: the same request's receipt is the
/// same bytes from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sign_with_one_key() {
    init();
    let sandbox = start_sandbox(&random_secret()).await;
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    let a = boot(
        sandbox.clone(),
        db,
        None,
        |_| {},
        std::sync::Arc::new(greenlight::domain::SystemClock),
    )
    .await;
    let id = a.create_ok("Deploy db v3").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let receipt = approve(&a, &id, "U0ALICE").await["receipt"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = boot(
        sandbox,
        TestDb::existing(&url),
        Some(a.key.clone()),
        |_| {},
        std::sync::Arc::new(greenlight::domain::SystemClock),
    )
    .await;
    assert_eq!(b.get(&id).await["receipt"], receipt.as_str());
    assert_eq!(
        jwks(&a.http, &a.base).await.keys.len(),
        1,
        "the second replica made no key of its own"
    );
    check(&receipt, &jwks(&b.http, &b.base).await);
}
