//! Protobuf encoding of stored objects, so store users need not import prost.

use thiserror::Error;

/// A stored value could not be decoded as the expected message.
#[derive(Debug, Error)]
#[error("decode {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: prost::DecodeError,
}

/// Encodes any generated message.
pub fn encode<M: prost::Message>(msg: &M) -> Vec<u8> {
    msg.encode_to_vec()
}

/// Decodes a generated message, naming the type on failure.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|source| DecodeError {
        what: std::any::type_name::<M>(),
        source,
    })
}

/// The size of a message once encoded, without encoding it.
pub fn encoded_len<M: prost::Message>(msg: &M) -> usize {
    msg.encoded_len()
}
