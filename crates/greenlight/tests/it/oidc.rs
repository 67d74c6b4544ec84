//! Workload tokens checked by `service::identity::Verifier` against a real issuer on loopback:
//! accepted with GitHub's and Kubernetes' claim shapes, and each refusal of issue 26 with its
//! own reason.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use greenlight::service::identity::{REFETCHES_PER_MINUTE, TokenError, Verifier};
use serde_json::json;

use crate::helpers::oidc::{Issuer, TestKey, now};

async fn setup() -> (Issuer, Verifier, TestKey) {
    crate::helpers::init();
    let key = TestKey::ec();
    let issuer = Issuer::start(vec![key.clone(), TestKey::rsa()]).await;
    let verifier = Verifier::new(vec![issuer.policy()]).unwrap();
    (issuer, verifier, key)
}

#[tokio::test]
async fn a_github_token_is_accepted_and_names_who_asked() {
    let (issuer, verifier, key) = setup().await;
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let verified = verifier.verify(&token, now()).await.unwrap();
    assert_eq!(verified.identity.trust, "github-acme");
    assert_eq!(
        verified.identity.subject,
        "repo:acme/api:ref:refs/tags/v1.2"
    );
    assert_eq!(verified.requester, "acme/api@refs/tags/v1.2");
    assert!(
        !verified.identity.claims.contains_key("jti"),
        "jti is dropped"
    );
    // RS256 too, from the same JWKS (fetched once).
    let rsa = TestKey::rsa().sign(&issuer.github_claims("greenlight", now(), 300));
    assert!(verifier.verify(&rsa, now()).await.is_ok());
    assert_eq!(issuer.fetches(), 1, "the JWKS is cached");
}

#[tokio::test]
async fn a_kubernetes_token_with_an_audience_list_is_accepted() {
    crate::helpers::init();
    let key = TestKey::ec();
    let issuer = Issuer::start(vec![key.clone()]).await;
    let mut p = issuer.policy();
    p.when = None;
    p.requester = None;
    let verifier = Verifier::new(vec![p]).unwrap();
    let token = key.sign(&issuer.kubernetes_claims("greenlight", now()));
    let verified = verifier.verify(&token, now()).await.unwrap();
    assert_eq!(verified.requester, "system:serviceaccount:payments:worker");
}

#[tokio::test]
async fn each_check_refuses_with_its_own_reason() {
    let (issuer, verifier, key) = setup().await;
    let t = now();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = issuer.github_claims("greenlight", t, 300);
        f(&mut c);
        c
    };
    let refused = |token: String| {
        let verifier = &verifier;
        async move { verifier.verify(&token, t).await.unwrap_err() }
    };
    assert_eq!(
        refused(key.sign(&claims(&|c| {
            c["iat"] = json!(t - 1000);
            c["nbf"] = json!(t - 1000);
            c["exp"] = json!(t - 100);
        })))
        .await,
        TokenError::Expired
    );
    assert_eq!(
        refused(key.sign(&claims(&|c| c["nbf"] = json!(t + 600)))).await,
        TokenError::NotYetValid
    );
    assert!(matches!(
        refused(key.sign(&claims(&|c| c["aud"] = json!("someone-else")))).await,
        TokenError::Audience(_)
    ));
    assert!(matches!(
        refused(key.sign(&claims(&|c| c["iss"] = json!("https://evil.example.com")))).await,
        TokenError::UntrustedIssuer(_)
    ));
    assert!(matches!(
        refused(key.sign(&claims(&|c| c["exp"] = json!(t + 7200)))).await,
        TokenError::Lifetime(7200, 3600)
    ));
    assert_eq!(
        refused(key.sign(&claims(&|c| c["ref"] = json!("refs/heads/main")))).await,
        TokenError::WhenFalse("github-acme".into())
    );
    // A signature by a key the issuer does not publish under that kid.
    let mut forged = TestKey::ec_next();
    forged.kid = "ec-1".into();
    assert_eq!(
        refused(forged.sign(&claims(&|_| {}))).await,
        TokenError::Signature
    );
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn none_and_hmac_keyed_with_the_public_key_are_refused() {
    let (issuer, verifier, _) = setup().await;
    let claims = issuer.github_claims("greenlight", now(), 300);
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "ec-1"})),
        b64(&claims)
    );
    assert!(matches!(
        verifier.verify(&unsigned, now()).await.unwrap_err(),
        TokenError::Malformed(_) | TokenError::Algorithm(_)
    ));
    // HS256 keyed with the RSA public key's bytes: the classic confusion.
    let public_pem = TestKey::rsa().pem.as_bytes().to_vec();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let hmac = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&hmac, now()).await.unwrap_err(),
        TokenError::Algorithm(_)
    ));
}

#[tokio::test]
async fn a_new_kid_after_rotation_is_fetched_and_made_up_kids_are_rate_limited() {
    let (issuer, verifier, key) = setup().await;
    assert!(
        verifier
            .verify(
                &key.sign(&issuer.github_claims("greenlight", now(), 300)),
                now()
            )
            .await
            .is_ok()
    );
    assert_eq!(issuer.fetches(), 1);
    // The issuer rotates: a token signed with the new key is accepted after one refetch.
    let next = TestKey::ec_next();
    issuer.publish(vec![key.clone(), next.clone()]);
    let rotated = next.sign(&issuer.github_claims("greenlight", now(), 300));
    assert!(verifier.verify(&rotated, now()).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
    // A flood of made-up kids: at most REFETCHES_PER_MINUTE fetches a minute in all.
    for i in 0..50 {
        let mut fake = TestKey::ec();
        fake.kid = format!("made-up-{i}");
        let token = fake.sign(&issuer.github_claims("greenlight", now(), 300));
        assert!(matches!(
            verifier.verify(&token, now()).await.unwrap_err(),
            TokenError::UnknownKey(_)
        ));
    }
    assert!(
        issuer.fetches() <= REFETCHES_PER_MINUTE,
        "{} fetches",
        issuer.fetches()
    );
    // Known keys still work meanwhile.
    assert!(verifier.verify(&rotated, now()).await.is_ok());
}
