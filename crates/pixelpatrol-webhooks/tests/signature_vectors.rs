//! The independent signature vectors (a copy of the project's shared oracle,
//! never edited) must all verify, and every one-byte change must not.

use pixelpatrol_webhooks::{
    sign_pixelpatrol, sign_standard, verify_pixelpatrol, verify_standard_signature,
};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("fixtures/signature-vectors.json")).unwrap()
}

#[test]
fn every_pixelpatrol_vector_signs_and_verifies() {
    let vectors = vectors();
    let cases = vectors["pixelpatrol"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let secret = case["secret"].as_str().unwrap();
        let body = case["body"].as_str().unwrap().as_bytes();
        let signature = case["signature"].as_str().unwrap();
        assert_eq!(
            sign_pixelpatrol(secret, body),
            signature,
            "secret {secret:?}"
        );
        assert_eq!(verify_pixelpatrol(secret, body, signature), Ok(()));

        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert!(verify_pixelpatrol(secret, &tampered, signature).is_err());
    }
}

#[test]
fn every_standard_webhooks_vector_signs_and_verifies() {
    let vectors = vectors();
    let cases = vectors["standard_webhooks"].as_array().unwrap();
    assert!(cases.len() >= 2);
    for case in cases {
        let secret = case["secret"].as_str().unwrap();
        let id = case["id"].as_str().unwrap();
        let timestamp = case["timestamp"].as_i64().unwrap();
        let body = case["body"].as_str().unwrap().as_bytes();
        let signature = case["signature"].as_str().unwrap();
        assert_eq!(sign_standard(secret, id, timestamp, body), signature);
        assert_eq!(
            verify_standard_signature(secret, id, timestamp, body, signature),
            Ok(())
        );
        assert!(verify_standard_signature(secret, id, timestamp + 1, body, signature).is_err());
        assert!(verify_standard_signature(secret, "other", timestamp, body, signature).is_err());
    }
}

#[test]
fn the_standardwebhooks_crate_accepts_our_signatures() {
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let id = "evt_01JD3Z5A0000000000000000";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = br#"{"id":"evt_01JD3Z5A0000000000000000","event":"media.created"}"#;
    let signature = sign_standard(secret, id, now, body);

    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", id.parse().unwrap());
    headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
    headers.insert("webhook-signature", signature.parse().unwrap());
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    webhook.verify(body, &headers).unwrap();
}
