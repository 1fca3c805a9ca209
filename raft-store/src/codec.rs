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

/// Largest value a decode may claim (1 GiB): a length read from damaged or hostile bytes is
/// checked against it before anything is allocated, so such bytes are an error, not an
/// allocation that aborts the process. The same bytes as [`config`] otherwise.
const DECODE_LIMIT: usize = 1 << 30;

fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
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
    let (value, _read) = bincode::serde::decode_from_slice(body, decode_config())?;
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

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives — a peer's frame, a log entry or a stored entity read back from a
        /// damaged disk — decoding answers an error, never a panic or an unbounded allocation.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut versioned = bytes.clone();
            if let Some(first) = versioned.first_mut() {
                *first = CODEC_VERSION;
            }
            for input in [&bytes, &versioned] {
                let _ = decode::<crate::Request>(input);
                let _ = decode::<crate::typ::Entry>(input);
                let _ = decode::<crate::network::RpcRequest>(input);
                let _ = decode::<crate::network::RpcResponse>(input);
                let _ = decode::<crate::state_machine::StateMachineData>(input);
                let _ = decode::<crate::Subscription>(input);
                let _ = decode::<crate::governance::Governance>(input);
            }
        }

        /// Commands survive the trip through the codec unchanged.
        #[test]
        fn commands_round_trip(id in "[a-z0-9]{1,16}", offset in any::<u64>(), node in 1u64..10) {
            let command = crate::Command::CommitCursors {
                node,
                commits: vec![crate::CursorCommit { id, partition: 0, offset }],
            };
            let bytes = encode(&crate::Request::new(command.clone())).unwrap();
            let back: crate::Request = decode(&bytes).unwrap();
            prop_assert_eq!(format!("{:?}", back.command), format!("{command:?}"));
        }
    }
}
