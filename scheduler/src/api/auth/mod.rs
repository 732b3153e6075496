//! Who is calling, and what they may do. Three modes:
//! - `jwt`: a bearer token verified here (see [`jwt`]);
//! - `headers`: identity headers set by a trusted gateway in front of the service, which must
//!   strip the same headers from what clients send;
//! - `none`: every caller may do everything, for local development only.

pub mod jwt;
pub mod permission;
pub mod token;

use std::collections::HashSet;
use std::path::PathBuf;

use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

pub use permission::{FunctionCall, Permission, Requirement};

/// Longest user or application id accepted from a token or a header.
const MAX_ID_LENGTH: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Jwt,
    Headers,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// HS256 shared secret (at least 32 bytes).
    pub jwt_secret: Option<String>,
    /// A JSON Web Key Set file with the RSA (RS256) and P-256 (ES256) public keys accepted.
    pub jwks_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// `headers` mode: the header with the user id.
    pub user_header: String,
    /// `headers` mode: the header with the application id.
    pub application_header: String,
    /// `headers` mode: the header with the comma-separated permission names.
    pub permissions_header: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Jwt,
            jwt_secret: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            user_header: "x-forwarded-user".to_owned(),
            application_header: "x-forwarded-application".to_owned(),
            permissions_header: "x-forwarded-permissions".to_owned(),
        }
    }
}

/// A caller that proved who they are.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Option<String>,
    pub application_id: Option<String>,
    permissions: Permissions,
}

#[derive(Debug, Clone)]
enum Permissions {
    /// `none` mode.
    All,
    Named(HashSet<String>),
}

impl Caller {
    pub fn has(&self, permission: Permission) -> bool {
        self.holds(permission.name())
    }

    fn holds(&self, name: &str) -> bool {
        match &self.permissions {
            Permissions::All => true,
            Permissions::Named(names) => names.contains(name),
        }
    }

    /// The global permission of this kind of call, or its variant for this one function.
    pub fn may_call(&self, call: FunctionCall, function_name: &str) -> bool {
        let permission = call.permission();
        self.has(permission) || self.holds(&format!("{}:{function_name}", permission.name()))
    }
}

/// The outcome of authentication: anonymous callers reach only public routes and functions.
#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    Caller(Caller),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    NotAuthenticated(String),
    #[error("This action requires the permission {0}")]
    NoPermission(String),
}

impl Identity {
    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Identity::Anonymous => None,
            Identity::Caller(caller) => Some(caller),
        }
    }

    pub fn authenticated(&self) -> Result<&Caller, Denied> {
        self.caller()
            .ok_or_else(|| Denied::NotAuthenticated("Authentication is required".to_owned()))
    }

    pub fn require(&self, permission: Permission) -> Result<&Caller, Denied> {
        let caller = self.authenticated()?;
        if caller.has(permission) {
            Ok(caller)
        } else {
            Err(Denied::NoPermission(permission.name().to_owned()))
        }
    }

    /// The check of `executionOptions.permissionMode` for an execution or an API call.
    pub fn require_function_mode(
        &self,
        mode: common::domain::PermissionMode,
        call: FunctionCall,
        function_name: &str,
    ) -> Result<(), Denied> {
        use common::domain::PermissionMode;
        match mode {
            PermissionMode::Public => Ok(()),
            PermissionMode::AllUsers => self.authenticated().map(|_| ()),
            PermissionMode::PermissionRequired => {
                if self.authenticated()?.may_call(call, function_name) {
                    Ok(())
                } else {
                    Err(Denied::NoPermission(format!(
                        "{0} or {0}:{function_name}",
                        call.permission().name()
                    )))
                }
            }
        }
    }

    pub fn user_id(&self) -> Option<String> {
        self.caller().and_then(|c| c.user_id.clone())
    }

    pub fn application_id(&self) -> Option<String> {
        self.caller().and_then(|c| c.application_id.clone())
    }
}

/// Turns request headers into an [`Identity`] according to the configured mode.
pub enum Authenticator {
    Jwt(jwt::JwtVerifier),
    Headers {
        user: String,
        application: String,
        permissions: String,
    },
    None,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, jwt::KeyError> {
        Ok(match config.mode {
            AuthMode::Jwt => Authenticator::Jwt(jwt::JwtVerifier::from_config(config)?),
            AuthMode::Headers => Authenticator::Headers {
                user: config.user_header.to_ascii_lowercase(),
                application: config.application_header.to_ascii_lowercase(),
                permissions: config.permissions_header.to_ascii_lowercase(),
            },
            AuthMode::None => Authenticator::None,
        })
    }

    /// Request headers that carry credentials, never passed on to functions.
    pub fn credential_headers(&self) -> Vec<&str> {
        match self {
            Authenticator::Headers {
                user,
                application,
                permissions,
            } => vec!["authorization", user, application, permissions],
            _ => vec!["authorization"],
        }
    }

    /// No credentials → anonymous; credentials that do not check out → refused, never
    /// silently downgraded to anonymous.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Identity, Denied> {
        match self {
            Authenticator::None => Ok(Identity::Caller(Caller {
                user_id: None,
                application_id: None,
                permissions: Permissions::All,
            })),
            Authenticator::Jwt(verifier) => {
                let Some(value) = single(headers, axum::http::header::AUTHORIZATION.as_str())?
                else {
                    return Ok(Identity::Anonymous);
                };
                let token = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
                    .ok_or_else(|| {
                        invalid("the Authorization header is not `Bearer <token>`".to_owned())
                    })?;
                let claims = verifier
                    .verify(token.trim())
                    .map_err(|rejected| invalid(rejected.to_string()))?;
                Ok(Identity::Caller(Caller {
                    user_id: Some(checked_id(claims.sub)?),
                    application_id: claims.application_id.map(checked_id).transpose()?,
                    permissions: Permissions::Named(claims.permissions.into_iter().collect()),
                }))
            }
            Authenticator::Headers {
                user,
                application,
                permissions,
            } => {
                let text = |name: &str| -> Result<Option<String>, Denied> {
                    single(headers, name)?
                        .map(|v| {
                            v.to_str()
                                .map(|s| s.trim().to_owned())
                                .map_err(|_| invalid(format!("the {name} header is not text")))
                        })
                        .transpose()
                };
                let Some(user_id) = text(user)? else {
                    return Ok(Identity::Anonymous);
                };
                let names = text(permissions)?.unwrap_or_default();
                Ok(Identity::Caller(Caller {
                    user_id: Some(checked_id(user_id)?),
                    application_id: text(application)?.map(checked_id).transpose()?,
                    permissions: Permissions::Named(
                        names
                            .split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    ),
                }))
            }
        }
    }
}

fn invalid(reason: String) -> Denied {
    Denied::NotAuthenticated(reason)
}

/// The one value of a credential header. Sent twice, it is refused: which copy a gateway
/// checked and which one reaches the service is anyone's guess.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, Denied> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(format!(
            "The {name} header is sent more than once; send it once"
        )));
    }
    Ok(first)
}

fn checked_id(id: String) -> Result<String, Denied> {
    if id.is_empty() || id.len() > MAX_ID_LENGTH || id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "user and application ids must be 1 to {MAX_ID_LENGTH} printable characters"
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

    fn jwt_authenticator() -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.to_owned()),
            ..AuthConfig::default()
        })
        .expect("valid config")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    fn claims(permissions: &[&str], exp: u64) -> jwt::Claims {
        jwt::Claims {
            sub: "user-1".to_owned(),
            application_id: Some("app-1".to_owned()),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            exp,
            iat: None,
        }
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn a_valid_token_names_the_caller_and_their_permissions() {
        let token = jwt::mint(
            SECRET,
            &claims(&["VIEW_TASKS", "EXECUTE_API_FUNCTION:report"], in_an_hour()),
        )
        .expect("minted");
        let identity = jwt_authenticator()
            .identify(&bearer(&token))
            .expect("accepted");
        assert_eq!(identity.user_id().as_deref(), Some("user-1"));
        assert_eq!(identity.application_id().as_deref(), Some("app-1"));
        assert!(identity.require(Permission::ViewTasks).is_ok());
        assert_eq!(
            identity.require(Permission::CreateTasks).err(),
            Some(Denied::NoPermission("CREATE_TASKS".to_owned()))
        );
        let caller = identity.caller().expect("caller");
        assert!(caller.may_call(FunctionCall::Api, "report"));
        assert!(!caller.may_call(FunctionCall::Api, "other"));
        assert!(!caller.may_call(FunctionCall::Execute, "report"));
    }

    #[test]
    fn bad_tokens_are_refused_not_downgraded() {
        let authenticator = jwt_authenticator();
        let expired = jwt::mint(SECRET, &claims(&[], 1_000)).expect("minted");
        let wrong_secret = jwt::mint(
            "another-secret-that-is-also-long-enough",
            &claims(&[], in_an_hour()),
        )
        .expect("minted");
        for token in [expired.as_str(), wrong_secret.as_str(), "not.a.token", ""] {
            assert!(
                matches!(
                    authenticator.identify(&bearer(token)),
                    Err(Denied::NotAuthenticated(_))
                ),
                "{token} was accepted"
            );
        }
        assert!(matches!(
            authenticator.identify(&HeaderMap::new()),
            Ok(Identity::Anonymous)
        ));
    }

    fn refusal(token: &str) -> String {
        match jwt_authenticator().identify(&bearer(token)) {
            Err(Denied::NotAuthenticated(message)) => message,
            other => panic!("{token} was not refused as unauthenticated: {other:?}"),
        }
    }

    fn signed(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signed")
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
        let now = jsonwebtoken::get_current_timestamp();
        let later = signed(&serde_json::json!({"sub": "u", "exp": now + 7200, "nbf": now + 600}));
        assert_eq!(refusal(&later), "The token is not valid yet");
        // A clock a few seconds ahead of this one is tolerated, as for `exp`.
        let skewed = signed(&serde_json::json!({"sub": "u", "exp": now + 7200, "nbf": now + 5}));
        assert!(jwt_authenticator().identify(&bearer(&skewed)).is_ok());
    }

    #[test]
    fn refusals_say_why_in_the_services_own_words() {
        let now = jsonwebtoken::get_current_timestamp();
        let expired = jwt::mint(SECRET, &claims(&[], 1_000)).expect("minted");
        let wrong_secret = jwt::mint(
            "another-secret-that-is-also-long-enough",
            &claims(&[], in_an_hour()),
        )
        .expect("minted");
        let no_subject = signed(&serde_json::json!({"exp": now + 600}));
        let bad_nbf = signed(&serde_json::json!({"sub": "u", "exp": now + 600, "nbf": "soon"}));
        for (token, message) in [
            (expired.as_str(), "The token has expired"),
            (
                wrong_secret.as_str(),
                "The token's signature does not verify",
            ),
            ("not.a.token", "The token is malformed"),
            ("", "The token is malformed"),
            (
                no_subject.as_str(),
                "The token's claims are not valid: `sub` (a string) and `exp` are required, \
                 `permissions` is a list of names",
            ),
            (
                bad_nbf.as_str(),
                "The token's `nbf` claim is missing or not valid",
            ),
        ] {
            assert_eq!(refusal(token), message, "{token}");
        }
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        // {"alg":"none"} with valid claims and no signature.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = base64_url(&format!(
            r#"{{"sub":"u","permissions":["VIEW_TASKS"],"exp":{}}}"#,
            in_an_hour()
        ));
        let token = format!("{header}.{body}.");
        assert!(jwt_authenticator().identify(&bearer(&token)).is_err());
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn a_short_secret_or_no_key_fails_at_start() {
        let short = AuthConfig {
            jwt_secret: Some("short".to_owned()),
            ..AuthConfig::default()
        };
        assert!(Authenticator::from_config(&short).is_err());
        assert!(Authenticator::from_config(&AuthConfig::default()).is_err());
    }

    #[test]
    fn gateway_headers_carry_identity_and_permissions() {
        let authenticator = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Headers,
            ..AuthConfig::default()
        })
        .expect("valid config");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", HeaderValue::from_static("u-7"));
        headers.insert(
            "x-forwarded-permissions",
            HeaderValue::from_static("VIEW_TASKS, CREATE_TASKS"),
        );
        let identity = authenticator.identify(&headers).expect("accepted");
        assert_eq!(identity.user_id().as_deref(), Some("u-7"));
        assert!(identity.require(Permission::CreateTasks).is_ok());
        assert!(identity.require(Permission::CancelTasks).is_err());
        assert!(matches!(
            authenticator.identify(&HeaderMap::new()),
            Ok(Identity::Anonymous)
        ));
    }

    #[test]
    fn a_credential_header_sent_twice_is_refused() {
        let gateway = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Headers,
            ..AuthConfig::default()
        })
        .expect("valid config");
        for name in [
            "x-forwarded-user",
            "x-forwarded-application",
            "x-forwarded-permissions",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-user", HeaderValue::from_static("u-7"));
            headers.append(name, HeaderValue::from_static("one"));
            headers.append(name, HeaderValue::from_static("two"));
            assert_eq!(
                gateway.identify(&headers).err(),
                Some(Denied::NotAuthenticated(format!(
                    "The {name} header is sent more than once; send it once"
                ))),
                "{name}"
            );
        }
        let token = jwt::mint(SECRET, &claims(&[], in_an_hour())).expect("minted");
        let mut headers = bearer(&token);
        headers.append(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        assert!(matches!(
            jwt_authenticator().identify(&headers),
            Err(Denied::NotAuthenticated(_))
        ));
    }
}
