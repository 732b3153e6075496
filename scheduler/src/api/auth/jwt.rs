//! Bearer JWT verification: HS256 with a shared secret, RS256 and ES256 with public keys from
//! a JWKS file. Only these three algorithms are accepted, and each only with its own kind of
//! key, so a token cannot pick a weaker algorithm or use a public key as an HMAC secret.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthConfig;

/// Shortest HS256 secret accepted: a short secret can be brute-forced from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims this service reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (`createdByUserId`, `x-exh-requesting-user-id`).
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Expiry, seconds since the epoch; required.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    public_keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.jwt_secret must be at least {MIN_SECRET_BYTES} bytes long")]
    ShortSecret,
    #[error("auth.jwks_file {path}: {reason}")]
    Jwks { path: String, reason: String },
    #[error(
        "auth.mode = \"jwt\" needs auth.jwt_secret (TASKS__AUTH__JWT_SECRET) or auth.jwks_file"
    )]
    NoKeys,
}

impl JwtVerifier {
    pub fn from_config(config: &AuthConfig) -> Result<JwtVerifier, KeyError> {
        let secret = match &config.jwt_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => return Err(KeyError::ShortSecret),
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let public_keys = match &config.jwks_file {
            Some(path) => load_jwks(path)?,
            None => Vec::new(),
        };
        if secret.is_none() && public_keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(JwtVerifier {
            secret,
            public_keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// The claims of a valid token; why it is refused otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| {
            tracing::debug!(%error, "bearer token refused");
            Rejected::Malformed
        })?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.secret.iter().collect(),
            Algorithm::RS256 | Algorithm::ES256 => self
                .public_keys
                .iter()
                .filter(|k| k.algorithm == header.alg)
                .filter(|k| header.kid.is_none() || k.kid == header.kid)
                .map(|k| &k.key)
                .collect(),
            _ => return Err(Rejected::Algorithm),
        };
        if keys.is_empty() {
            return Err(Rejected::NoKey);
        }
        let mut validation = Validation::new(header.alg);
        // Clocks differ a little between the issuer and this service; both ends of a token's
        // validity (`nbf`, `exp`) get the same allowance.
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let mut last_error = Rejected::NoKey;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => last_error = Rejected::from(error),
            }
        }
        Err(last_error)
    }
}

/// Why a token is refused, in the service's own words: the parser's wording names its
/// internals and changes between its versions, so it is only logged, at debug level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("The token is malformed")]
    Malformed,
    #[error("The token's algorithm is not accepted (HS256, RS256 and ES256 are)")]
    Algorithm,
    #[error("No key is configured for the token's algorithm and key id")]
    NoKey,
    #[error("The token's signature does not verify")]
    Signature,
    #[error("The token has expired")]
    Expired,
    #[error("The token is not valid yet")]
    NotYetValid,
    #[error("The token's issuer is not accepted")]
    Issuer,
    #[error("The token's audience is not accepted")]
    Audience,
    #[error("The token's `{0}` claim is missing or not valid")]
    Claim(String),
    #[error(
        "The token's claims are not valid: `sub` (a string) and `exp` are required, \
         `permissions` is a list of names"
    )]
    Claims,
}

impl From<jsonwebtoken::errors::Error> for Rejected {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        tracing::debug!(%error, "bearer token refused");
        match error.into_kind() {
            ErrorKind::InvalidSignature => Rejected::Signature,
            ErrorKind::ExpiredSignature => Rejected::Expired,
            ErrorKind::ImmatureSignature => Rejected::NotYetValid,
            ErrorKind::InvalidIssuer => Rejected::Issuer,
            ErrorKind::InvalidAudience => Rejected::Audience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejected::Algorithm,
            // The claim names are the specification's (`exp`, `nbf`, `sub`…), never the token's.
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Rejected::Claim(claim)
            }
            // The header was read before: what does not parse is the claims.
            ErrorKind::Json(_) => Rejected::Claims,
            _ => Rejected::Malformed,
        }
    }
}

fn load_jwks(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let fail = |reason: String| KeyError::Jwks {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => return Err(fail("only RSA and P-256 keys are supported".to_owned())),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
        keys.push(PublicKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err(fail("the set holds no keys".to_owned()));
    }
    Ok(keys)
}

/// Signs an HS256 token, for local use and tests (`scheduler token`).
pub fn mint(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}
