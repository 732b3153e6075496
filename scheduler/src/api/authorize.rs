//! Authentication and the permission check of every route, before any handler or body
//! extractor runs: an unauthorized caller learns nothing about the request's validity.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::auth::{Identity, Requirement, permission::requirement};

use super::AppState;
use super::error::ApiError;

/// Resolves the caller, enforces the route's requirement, and leaves the [`Identity`] in the
/// request extensions for handlers that decide per function or record who asked.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let requirement = match &route {
        Some(route) => requirement(request.method().as_str(), route),
        // No route matched: the fallback answers 404 without looking at credentials.
        None => Requirement::Public,
    };
    if requirement != Requirement::Public {
        let identity = match state.auth.identify(request.headers()) {
            Ok(identity) => identity,
            Err(denied) => return ApiError::from(denied).into_response(),
        };
        let checked = match requirement {
            Requirement::Permission(permission) => identity.require(permission).map(|_| ()),
            // Unlisted: a method the route does not serve; the handler answers 405.
            Requirement::Unlisted => identity.authenticated().map(|_| ()),
            Requirement::FunctionMode | Requirement::Public => Ok(()),
        };
        if let Err(denied) = checked {
            return ApiError::from(denied).into_response();
        }
        request.extensions_mut().insert(identity);
    } else {
        request.extensions_mut().insert(Identity::Anonymous);
    }
    next.run(request).await
}
