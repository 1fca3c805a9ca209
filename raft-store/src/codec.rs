//! Encoding of everything this crate persists or sends: a format-version byte, then bincode 2
//! (`standard()` configuration, serde). A reader refuses versions newer than it knows.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Version of persisted values and wire frames written by this build.
pub const CODEC_VERSION: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(CODEC_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (&version, body) = bytes.split_first().ok_or(Error::UnsupportedFormat {
        found: 0,
        supported: CODEC_VERSION,
    })?;
    if version == 0 || version > CODEC_VERSION {
        return Err(Error::UnsupportedFormat {
            found: version,
            supported: CODEC_VERSION,
        });
    }
    let (value, _read) = bincode::serde::decode_from_slice(body, config())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&("topic", 42u64)).unwrap();
        assert_eq!(bytes[0], CODEC_VERSION);
        let back: (String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, ("topic".to_owned(), 42));

        let mut newer = bytes.clone();
        newer[0] = CODEC_VERSION + 1;
        assert!(matches!(
            decode::<(String, u64)>(&newer),
            Err(Error::UnsupportedFormat { .. })
        ));
        assert!(decode::<(String, u64)>(&[]).is_err());
    }
}
