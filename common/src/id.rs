//! 24-hex-character identifiers in the shape of a MongoDB ObjectId, which is what clients of the
//! Extra Horizon API expect for every `id` field.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 12]);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a valid id: expected 24 hexadecimal characters")]
pub struct InvalidObjectId(pub String);

impl ObjectId {
    /// A new id: 4 bytes of seconds since the epoch, 5 random bytes chosen once per process and a
    /// 3-byte counter, so ids sort roughly by creation time and never collide between processes.
    pub fn generate() -> Self {
        static PROCESS_UNIQUE: OnceLock<[u8; 5]> = OnceLock::new();
        static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
        let process = PROCESS_UNIQUE.get_or_init(rand::random);
        let counter = COUNTER
            .get_or_init(|| AtomicU32::new(rand::random::<u32>()))
            .fetch_add(1, Ordering::Relaxed);
        let seconds = chrono::Utc::now().timestamp() as u32;

        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        bytes[4..9].copy_from_slice(process);
        bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        ObjectId(bytes)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = InvalidObjectId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidObjectId(s.chars().take(64).collect());
        if s.len() != 24 || !s.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0u8; 12];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(ObjectId(bytes))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_round_trip() {
        let a = ObjectId::generate();
        let b = ObjectId::generate();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 24);
        assert_eq!(text.parse::<ObjectId>().unwrap(), a);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "757f191a810c19729de860a",
            "757f191a810c19729de860ag",
            "ééééééééééééé",
        ] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad}");
        }
        assert!("757F191A810C19729DE860AE".parse::<ObjectId>().is_ok());
    }
}
