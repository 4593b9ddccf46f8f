//! Access tokens: HS256 JWTs in LiveKit's claim layout.

use std::collections::BTreeMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomstate_protocol::{Claims, ConnectRefusal, ConnectRefusalCode, Limits};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 10;

/// A participant's verified token.
pub struct Verified {
    pub claims: Claims,
    /// Signed and otherwise valid, but past its `exp`: it may resume, not join.
    pub expired: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Enforced,
    Tolerated,
}

pub struct Authenticator {
    keys: BTreeMap<String, String>,
}

impl Authenticator {
    pub fn new(keys: BTreeMap<String, String>) -> Self {
        Authenticator { keys }
    }

    /// Checks a participant's token: signature, time window, and an identity.
    pub fn verify(&self, token: &str) -> Result<Claims, ConnectRefusal> {
        self.verify_participant(token, Expiry::Enforced)
            .map(|verified| verified.claims)
    }

    /// As [`verify`](Self::verify), for a connection that asks to resume: a token that
    /// has only expired passes, marked so. The resume token (a secret only the
    /// participant's own connection was given) is what proves the right to resume; the
    /// room refuses the connection if it cannot resume and would join anew instead.
    pub fn verify_resuming(&self, token: &str) -> Result<Verified, ConnectRefusal> {
        self.verify_participant(token, Expiry::Tolerated)
    }

    fn verify_participant(&self, token: &str, expiry: Expiry) -> Result<Verified, ConnectRefusal> {
        let verified = match self.verify_signed(token) {
            Ok(claims) => Verified {
                claims,
                expired: false,
            },
            Err(refusal)
                if refusal.code == ConnectRefusalCode::TokenExpired
                    && expiry == Expiry::Tolerated =>
            {
                Verified {
                    claims: self.decode(token, false)?,
                    expired: true,
                }
            }
            Err(refusal) => return Err(refusal),
        };
        if verified.claims.sub.is_empty() {
            return Err(ConnectRefusal {
                code: ConnectRefusalCode::InvalidToken,
                message: "the access token has no identity (sub)".into(),
            });
        }
        Ok(verified)
    }

    /// Checks the signature and the time window, and returns the claims. Server API
    /// tokens need no identity.
    pub fn verify_signed(&self, token: &str) -> Result<Claims, ConnectRefusal> {
        self.decode(token, true)
    }

    fn decode(&self, token: &str, check_expiry: bool) -> Result<Claims, ConnectRefusal> {
        let refuse = |code, message: String| ConnectRefusal { code, message };
        // The key that signed the token is named inside it, so read `iss` first.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
            .map_err(|error| {
                refuse(
                    ConnectRefusalCode::InvalidToken,
                    format!("the access token cannot be read: {error}"),
                )
            })?
            .claims;
        let secret = self.keys.get(&unverified.iss).ok_or_else(|| {
            refuse(
                ConnectRefusalCode::InvalidToken,
                format!("unknown API key {:?}", unverified.iss),
            )
        })?;
        // As LiveKit: a token must expire. One without `exp` would let whoever copied it
        // join for ever, and no revocation list exists to stop it.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["exp".to_string()].into();
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = check_expiry;
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => refuse(
                ConnectRefusalCode::TokenExpired,
                "the access token has expired".into(),
            ),
            ErrorKind::ImmatureSignature => refuse(
                ConnectRefusalCode::TokenNotYetValid,
                "the access token is not valid yet (nbf is in the future)".into(),
            ),
            ErrorKind::MissingRequiredClaim(claim) => refuse(
                ConnectRefusalCode::InvalidToken,
                format!("the access token has no {claim:?} claim: tokens must expire"),
            ),
            ErrorKind::InvalidSignature => refuse(
                ConnectRefusalCode::InvalidToken,
                format!(
                    "the access token's signature does not match API key {:?}",
                    unverified.iss
                ),
            ),
            _ => refuse(
                ConnectRefusalCode::InvalidToken,
                format!("the access token is not valid: {error}"),
            ),
        })?
        .claims;
        Ok(claims)
    }

    /// Checks what the token would show everyone against the limits an update must
    /// meet: a token is no way around them.
    pub fn check_claims(claims: &Claims, limits: &Limits) -> Result<(), ConnectRefusal> {
        let refuse = |message: String| ConnectRefusal {
            code: ConnectRefusalCode::InvalidToken,
            message,
        };
        if claims.sub.len() > limits.key_bytes {
            return Err(refuse(format!(
                "the access token's identity is {} bytes, the limit is {} (limits.key_bytes)",
                claims.sub.len(),
                limits.key_bytes
            )));
        }
        let mut shown = roomstate_protocol::ParticipantInfo::default();
        crate::rules::apply_participant_update(
            &mut shown,
            Some(claims.attributes.clone().into_iter().collect()),
            Some(claims.metadata.clone()),
            Some(claims.name.clone()),
            limits,
        )
        .map_err(|error| {
            refuse(format!(
                "the access token's claims break a limit: {}",
                error.message
            ))
        })
    }

    /// Checks that the claims allow joining a room, and returns the room's name.
    pub fn room_to_join(
        claims: &Claims,
        requested: Option<&str>,
    ) -> Result<String, ConnectRefusal> {
        let refuse = |message: String| ConnectRefusal {
            code: ConnectRefusalCode::NotAllowed,
            message,
        };
        if !claims.video.room_join || claims.video.room.is_empty() {
            return Err(refuse(
                "the access token does not grant roomJoin for a room".into(),
            ));
        }
        match requested {
            Some(room) if room != claims.video.room => Err(refuse(format!(
                "the access token is for room {:?}, not {room:?}",
                claims.video.room
            ))),
            _ => Ok(claims.video.room.clone()),
        }
    }
}

/// Signs `claims` with `secret`. `claims.iss` must name the secret's API key.
pub fn mint_token(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of serializable claims cannot fail")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomstate_protocol::VideoGrant;

    fn claims(exp: Option<u64>, nbf: Option<u64>) -> Claims {
        Claims {
            iss: "key".into(),
            sub: "alice".into(),
            exp,
            nbf,
            video: VideoGrant {
                room: "r".into(),
                room_join: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new([("key".to_string(), "secret".to_string())].into())
    }

    #[test]
    fn a_good_token_verifies() {
        let now = unix_now();
        let token = mint_token(&claims(Some(now + 60), None), "secret");
        let verified = auth().verify(&token).unwrap();
        assert_eq!(verified.sub, "alice");
        assert_eq!(Authenticator::room_to_join(&verified, None).unwrap(), "r");
        let wrong_room = Authenticator::room_to_join(&verified, Some("other")).unwrap_err();
        assert_eq!(wrong_room.code, ConnectRefusalCode::NotAllowed);
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let now = unix_now();
        let cases = [
            (
                mint_token(&claims(Some(now + 60), None), "wrong"),
                ConnectRefusalCode::InvalidToken,
            ),
            (
                mint_token(&claims(None, None), "secret"),
                ConnectRefusalCode::InvalidToken,
            ),
            (
                mint_token(&claims(Some(now - 100), None), "secret"),
                ConnectRefusalCode::TokenExpired,
            ),
            (
                mint_token(&claims(Some(now + 600), Some(now + 100)), "secret"),
                ConnectRefusalCode::TokenNotYetValid,
            ),
            ("not.a.token".to_string(), ConnectRefusalCode::InvalidToken),
        ];
        for (token, code) in cases {
            assert_eq!(auth().verify(&token).unwrap_err().code, code, "{token}");
        }
        let mut unknown_key = claims(Some(now + 60), None);
        unknown_key.iss = "other".into();
        let refusal = auth()
            .verify(&mint_token(&unknown_key, "secret"))
            .unwrap_err();
        assert!(
            refusal.message.contains("unknown API key"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn claims_are_held_to_the_limits_of_an_update() {
        let limits = Limits::default();
        let mut fine = claims(Some(unix_now() + 60), None);
        fine.name = "a".repeat(limits.name_bytes);
        Authenticator::check_claims(&fine, &limits).unwrap();
        let mut long_name = fine.clone();
        long_name.name = "a".repeat(limits.name_bytes + 1);
        let mut big_metadata = fine.clone();
        big_metadata.metadata = "m".repeat(limits.metadata_bytes + 1);
        let mut big_attributes = fine.clone();
        big_attributes.attributes = (0..100)
            .map(|n| (format!("k{n}"), "v".repeat(1000)))
            .collect();
        let mut long_identity = fine.clone();
        long_identity.sub = "i".repeat(limits.key_bytes + 1);
        for (what, claims) in [
            ("name", long_name),
            ("metadata", big_metadata),
            ("attributes", big_attributes),
            ("identity", long_identity),
        ] {
            let refusal = Authenticator::check_claims(&claims, &limits).unwrap_err();
            assert_eq!(refusal.code, ConnectRefusalCode::InvalidToken, "{what}");
        }
    }
}
