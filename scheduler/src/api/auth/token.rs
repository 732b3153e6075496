//! `scheduler token`: mints an HS256 token with the configured secret, for local use.
//!
//! ```text
//! scheduler token [--sub <user id>] [--application <application id>]
//!                 [--permissions all | NAME,NAME,…] [--ttl-seconds <n>]
//! ```

use super::AuthConfig;
use super::jwt::{Claims, mint};
use super::permission::Permission;

pub const USAGE: &str = "usage: scheduler token [--sub <user id>] [--application <application id>] \
     [--permissions all | NAME,NAME,...] [--ttl-seconds <n>]";

pub fn command(config: &AuthConfig, arguments: &[String]) -> Result<String, String> {
    let secret = config
        .jwt_secret
        .as_deref()
        .ok_or("set the HS256 secret in TASKS__AUTH__JWT_SECRET (auth.jwt_secret) first")?;
    let mut claims = Claims {
        sub: "000000000000000000000001".to_owned(),
        application_id: None,
        permissions: all_permissions(),
        exp: 0,
        iat: Some(jsonwebtoken::get_current_timestamp()),
    };
    let mut ttl_seconds: u64 = 3600;
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--sub" => claims.sub = value.clone(),
            "--application" => claims.application_id = Some(value.clone()),
            "--permissions" if value == "all" => claims.permissions = all_permissions(),
            "--permissions" => {
                claims.permissions = value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--ttl-seconds" => {
                ttl_seconds = value
                    .parse()
                    .map_err(|_| format!("--ttl-seconds must be a number\n{USAGE}"))?
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    claims.exp = jsonwebtoken::get_current_timestamp() + ttl_seconds;
    mint(secret, &claims).map_err(|e| e.to_string())
}

pub fn all_permissions() -> Vec<String> {
    Permission::ALL
        .iter()
        .map(|p| p.name().to_owned())
        .collect()
}
