//! Slack's v0 request signing: `v0=` + hex(HMAC-SHA256(secret, "v0:" + ts + ":" + raw body)).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Slack's replay window.
pub const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("X-Slack-Request-Timestamp is not a number")]
    BadTimestamp,
    #[error("request timestamp is outside the 5-minute window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// A stable code for the error body and the logs.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "missing_signature",
            SignatureError::BadTimestamp => "invalid_timestamp",
            SignatureError::Stale => "stale_request",
            SignatureError::Mismatch => "invalid_signature",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The `X-Slack-Signature` value for a body (used by tests and the CLI's own tooling).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// What a verified request was signed with: the replay cache's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signed {
    pub timestamp: i64,
    pub mac: [u8; 32],
}

/// Verifies a request: headers present, timestamp within the window of `now_unix`, signature
/// equal in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<Signed, SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let signature = signature.ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    // The header is unauthenticated: an extreme value must not overflow the subtraction.
    let fresh = now_unix
        .checked_sub(ts)
        .and_then(i64::checked_abs)
        .is_some_and(|age| age <= MAX_AGE_SECS);
    if !fresh {
        return Err(SignatureError::Stale);
    }
    let given: [u8; 32] = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Mismatch)?;
    mac(secret, timestamp, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(Signed {
        timestamp: ts,
        mac: given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const EXPECTED: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_test_vector() {
        assert_eq!(sign(SECRET, TS, BODY), EXPECTED);
        assert!(verify(SECRET, Some(TS), Some(EXPECTED), BODY, 1_531_420_618).is_ok());
    }

    #[test]
    fn rejects_what_slack_would_reject() {
        let now = 1_531_420_618;
        let v = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify(SECRET, ts, sig, body, now)
        };
        assert_eq!(
            v(None, Some(EXPECTED), BODY, now),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            v(Some(TS), None, BODY, now),
            Err(SignatureError::Missing("X-Slack-Signature"))
        );
        assert_eq!(
            v(Some("soon"), Some(EXPECTED), BODY, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            v(Some(TS), Some(EXPECTED), BODY, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v(Some(TS), Some(EXPECTED), BODY, now - 301),
            Err(SignatureError::Stale)
        );
        assert!(v(Some(TS), Some(EXPECTED), BODY, now + 300).is_ok());
        // The same signature in capitals is the same MAC: one key for the replay cache.
        let upper = format!("v0={}", EXPECTED[3..].to_uppercase());
        assert_eq!(
            v(Some(TS), Some(&upper), BODY, now),
            v(Some(TS), Some(EXPECTED), BODY, now)
        );
        assert_eq!(
            v(Some(TS), Some(EXPECTED), b"token=tampered", now),
            Err(SignatureError::Mismatch)
        );
        let v1 = EXPECTED.replacen("v0=", "v1=", 1);
        assert_eq!(
            v(Some(TS), Some(&v1), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(Some(TS), Some("v0=zz"), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(Some(TS), Some("v0="), BODY, now),
            Err(SignatureError::Mismatch)
        );
    }

    /// `now - ts` overflows i64 for these; the check must refuse them, not wrap or panic.
    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let now = 1_531_420_618;
        for ts in [
            "-9223372035058666394",
            &i64::MIN.to_string(),
            &i64::MAX.to_string(),
            &(i64::MIN + 1).to_string(),
        ] {
            let sig = sign(SECRET, ts, BODY);
            // 1_800_000_000 is late 2026, when the first value overflows `now - ts`.
            for now in [now, 1_800_000_000, 0, -1] {
                assert_eq!(
                    verify(SECRET, Some(ts), Some(&sig), BODY, now),
                    Err(SignatureError::Stale),
                    "ts {ts}, now {now}"
                );
            }
        }
        assert_eq!(
            verify(
                SECRET,
                Some("9223372036854775808"),
                Some(EXPECTED),
                BODY,
                now
            ),
            Err(SignatureError::BadTimestamp)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Timestamp headers: numbers near now, extreme numbers, and anything at all.
        fn timestamp() -> impl Strategy<Value = String> {
            prop_oneof![
                (-400i64..400).prop_map(|d| (1_800_000_000 + d).to_string()),
                any::<i64>().prop_map(|t| t.to_string()),
                "[ +-]?[0-9]{0,25}[ ]?",
                ".{0,30}",
            ]
        }

        /// Signature headers: well-formed hex of any MAC, near misses, and anything at all.
        fn signature() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 32)
                    .prop_map(|mac| format!("v0={}", hex::encode(mac))),
                "v[0-9]=[0-9a-fA-F]{0,70}",
                ".{0,80}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the headers and body, `verify` answers without panicking, and accepts
            /// only what the secret signed within the window.
            #[test]
            fn never_panics_and_accepts_only_the_signed(
                secret in proptest::collection::vec(any::<u8>(), 0..40),
                ts in proptest::option::of(timestamp()),
                sig in proptest::option::of(signature()),
                body in proptest::collection::vec(any::<u8>(), 0..200),
                now in prop_oneof![Just(1_800_000_000i64), any::<i64>()],
            ) {
                let res = verify(&secret, ts.as_deref(), sig.as_deref(), &body, now);
                if let Ok(signed) = res {
                    let ts = ts.unwrap();
                    let expected = sign(&secret, &ts, &body);
                    prop_assert!(sig.unwrap().eq_ignore_ascii_case(&expected));
                    prop_assert!(now.checked_sub(signed.timestamp).is_some_and(|a| a.abs() <= MAX_AGE_SECS));
                }
            }

            /// What `sign` produces verifies inside the window, and not once a byte changes.
            #[test]
            fn a_signed_body_verifies_and_a_changed_one_does_not(
                secret in proptest::collection::vec(any::<u8>(), 0..40),
                body in proptest::collection::vec(any::<u8>(), 0..200),
                ts in -1_000_000_000_000i64..1_000_000_000_000,
                age in -MAX_AGE_SECS..=MAX_AGE_SECS,
                flip in any::<proptest::sample::Index>(),
            ) {
                let ts_text = ts.to_string();
                let sig = sign(&secret, &ts_text, &body);
                let signed = verify(&secret, Some(&ts_text), Some(&sig), &body, ts + age);
                prop_assert_eq!(signed.map(|s| s.timestamp), Ok(ts));
                if !body.is_empty() {
                    let mut changed = body.clone();
                    let i = flip.index(changed.len());
                    changed[i] ^= 1;
                    prop_assert_eq!(
                        verify(&secret, Some(&ts_text), Some(&sig), &changed, ts + age),
                        Err(SignatureError::Mismatch)
                    );
                }
                let other_secret = [secret.as_slice(), b"x"].concat();
                prop_assert_eq!(
                    verify(&other_secret, Some(&ts_text), Some(&sig), &body, ts + age),
                    Err(SignatureError::Mismatch)
                );
            }
        }
    }
}
