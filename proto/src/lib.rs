//! The `sluice.v1` gRPC API contract: generated messages, clients and servers, plus the
//! encoded descriptor set for server reflection.
//!
//! The `.proto` files under `proto/sluice/v1/` are the source of truth; every field is
//! documented there and that documentation becomes the rustdoc of the generated types.

#![allow(clippy::all, missing_docs)]

/// Generated code for package `sluice.v1`.
pub mod v1 {
    tonic::include_proto!("sluice.v1");

    /// The encoded `FileDescriptorSet` of every sluice.v1 file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
}

pub use v1::ErrorCode;

pub mod auth;
pub mod status;
pub mod tls;
pub mod transport;
