//! AWS Signature Version 4 for the one request shape the JSON protocols use: `POST` of a JSON
//! body with `host`, `x-amz-date`, `x-amz-target`, `content-type` (and the session token) signed.
//! The signing key depends only on the day, the region and the service, so it is derived once a
//! day instead of with four HMACs on every call; a test checks every signature against the
//! `aws-sigv4` crate's.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::Mutex;

type HmacSha256 = Hmac<Sha256>;

/// The content type of AWS's JSON 1.0 protocol (DynamoDB, SQS).
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The credentials a request is signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What a signed request carries besides its body and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub amz_date: String,
    pub authorization: String,
}

/// Signs for one region and service; caches the day's signing key.
#[derive(Debug)]
pub struct Signer {
    region: String,
    service: &'static str,
    /// One entry, replaced when the day or the credentials change.
    key: Mutex<Option<CachedKey>>,
}

struct CachedKey {
    day: String,
    secret: String,
    key: [u8; 32],
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("day", &self.day)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Signer {
    pub fn new(region: impl Into<String>, service: &'static str) -> Signer {
        Signer {
            region: region.into(),
            service,
            key: Mutex::new(None),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn signing_key(&self, day: &str, keys: &Keys) -> [u8; 32] {
        let mut cached = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref()
            && c.day == day
            && c.secret == keys.secret_access_key
        {
            return c.key;
        }
        let secret = format!("AWS4{}", keys.secret_access_key);
        let key = [
            day.as_bytes(),
            self.region.as_bytes(),
            self.service.as_bytes(),
            b"aws4_request",
        ]
        .iter()
        .fold(None::<[u8; 32]>, |k, part| {
            Some(hmac(k.as_ref().map_or(secret.as_bytes(), |k| k), part))
        })
        .unwrap_or_default();
        *cached = Some(CachedKey {
            day: day.to_string(),
            secret: keys.secret_access_key.clone(),
            key,
        });
        key
    }

    /// Signs `POST {path}` to `host` with `target` and `body` at `now`.
    pub fn sign(
        &self,
        keys: &Keys,
        host: &str,
        path: &str,
        target: &str,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> Signed {
        let amz_date = amz_date(now);
        let day = &amz_date[..8];
        let signed_headers = if keys.session_token.is_some() {
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-type;host;x-amz-date;x-amz-target"
        };
        let mut canonical = String::with_capacity(320);
        let _ = write!(
            canonical,
            "POST\n{path}\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\n"
        );
        if let Some(token) = &keys.session_token {
            let _ = writeln!(canonical, "x-amz-security-token:{token}");
        }
        let _ = write!(
            canonical,
            "x-amz-target:{target}\n\n{signed_headers}\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(hmac(&self.signing_key(day, keys), to_sign.as_bytes()));
        Signed {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                keys.access_key_id
            ),
            amz_date,
        }
    }
}

/// `20150830T123600Z`.
fn amz_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4::SigningParams;

    /// The `aws-sigv4` crate's headers for the same request.
    fn reference(
        keys: &Keys,
        url: &str,
        region: &str,
        service: &str,
        target: &str,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> (String, String) {
        let creds = aws_credential_types::Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            keys.session_token.clone(),
            None,
            "test",
        );
        let identity = creds.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(std::time::SystemTime::from(now))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", target)];
        let request =
            SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let found = |name: &str| {
            instructions
                .headers()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
                .unwrap()
        };
        (found("authorization"), found("x-amz-date"))
    }

    #[test]
    fn signatures_match_the_aws_sigv4_crate() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_764_700_000).unwrap();
        let cases = [
            (
                None,
                "https://dynamodb.eu-west-1.amazonaws.com/",
                "dynamodb.eu-west-1.amazonaws.com",
                "/",
                "eu-west-1",
                "dynamodb",
            ),
            (
                Some("FwoGZXIvYXdzEJr//token=="),
                "http://127.0.0.1:5000/",
                "127.0.0.1:5000",
                "/",
                "us-east-1",
                "sqs",
            ),
            (
                Some("t"),
                "http://localhost:4566/",
                "localhost:4566",
                "/",
                "ap-south-2",
                "dynamodb",
            ),
        ];
        for (token, url, host, path, region, service) in cases {
            let keys = Keys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: token.map(str::to_string),
            };
            let service: &'static str = if service == "sqs" { "sqs" } else { "dynamodb" };
            let signer = Signer::new(region, service);
            for body in [
                &b"{}"[..],
                br#"{"TableName":"t","Item":{"pk":{"S":"x"}}}"#,
                b"",
            ] {
                let target = "DynamoDB_20120810.PutItem";
                // Twice: the second signature comes from the cached key.
                for _ in 0..2 {
                    let ours = signer.sign(&keys, host, path, target, body, now);
                    let (authorization, date) =
                        reference(&keys, url, region, service, target, body, now);
                    assert_eq!(ours.authorization, authorization);
                    assert_eq!(ours.amz_date, date);
                }
            }
        }
    }

    #[test]
    fn a_new_day_or_new_keys_derive_a_new_key() {
        let signer = Signer::new("us-east-1", "dynamodb");
        let mut keys = Keys {
            access_key_id: "A".into(),
            secret_access_key: "s1".into(),
            session_token: None,
        };
        let a = signer.signing_key("20261202", &keys);
        assert_eq!(a, signer.signing_key("20261202", &keys));
        assert_ne!(a, signer.signing_key("20261203", &keys));
        keys.access_key_id = "B".into();
        keys.secret_access_key = "s2".into();
        assert_ne!(signer.signing_key("20261202", &keys), a);
    }

    #[test]
    fn keys_never_print_their_secrets() {
        let keys = Keys {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("tok-secret".into()),
        };
        let shown = format!("{keys:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("tok-secret"));
    }
}
