//! Signatures as the Standard Webhooks specification says (standardwebhooks.com): a secret is
//! `whsec_` and the base64 of 32 random bytes; a delivery carries `webhook-id` (the event's
//! id, the same on every attempt, so that a receiver dedupes by it), `webhook-timestamp`
//! (epoch seconds of the attempt) and `webhook-signature`, `v1,` and the base64 of
//! HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed by the secret's bytes. A receiver checks
//! them with the specification's library in any language.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{hmac, rand::SecureRandom};

const PREFIX: &str = "whsec_";

/// A new signing secret.
pub(crate) fn new_secret() -> String {
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("the system's random source failed");
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` of `body` sent as message `id` at `timestamp` (epoch seconds).
pub(crate) fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix(PREFIX).unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn signs_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_new_each_time_and_carry_32_bytes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let key = STANDARD.decode(a.strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(key.len(), 32);
    }
}
