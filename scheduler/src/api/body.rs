//! Request bodies: read as bytes and parsed here, so every failure gets the reference's error
//! (13 empty, 22 not JSON or too large, 14 missing fields, 15 wrong type) instead of the
//! framework's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON object body. An empty body is an empty object only where the route allows it
/// (see [`OptionalJsonObject`]).
pub struct JsonObject(pub Map<String, Value>);

/// A JSON object body that may also be empty (for example `POST …/execute` or `…/cancel`).
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match read_object(request, state).await? {
            Some(object) => Ok(JsonObject(object)),
            None => Err(ApiError::EmptyBody),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(OptionalJsonObject(
            read_object(request, state).await?.unwrap_or_default(),
        ))
    }
}

async fn read_object<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let limit = super::body_limit(request.uri().path());
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) => ApiError::BodyTooLarge(limit),
            other => ApiError::BodyFormat(other.body_text()),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if !common::db::text::json_is_storable(&value) => Err(ApiError::BodyFormat(
            "Strings in the request body may not contain the NUL character (\\u0000)".into(),
        )),
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(ApiError::BodyFormat(
            "The request body must be a JSON object".into(),
        )),
        Err(error) => Err(ApiError::BodyFormat(format!(
            "The request body is not valid JSON: {error}"
        ))),
    }
}

/// Deserializes a body object into an input type whose fields are all optional; a type
/// mismatch becomes error 15 naming the problem.
pub fn parse<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    // `null` means "not given" for every field of every input.
    let object: Map<String, Value> = object.into_iter().filter(|(_, v)| !v.is_null()).collect();
    serde_json::from_value(Value::Object(object))
        .map_err(|error| ApiError::FieldFormat(format!("Invalid field: {error}")))
}

/// Collects the names of required fields that are absent, for one error 14 listing them all.
#[derive(Default)]
pub struct Required(Vec<&'static str>);

impl Required {
    pub fn check<T>(&mut self, name: &'static str, value: &Option<T>) -> &mut Self {
        if value.is_none() {
            self.0.push(name);
        }
        self
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::MissingFields(std::mem::take(&mut self.0)))
        }
    }
}

/// Deserializes an optional whole number sent as any JSON number (`30` or `30.0`).
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    let number = serde_json::Number::deserialize(d)?;
    let value = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    });
    value
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, got {number}")))
}
