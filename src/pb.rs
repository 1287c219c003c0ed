//! The generated gRPC types (`labeld.v1`), compiled by build.rs from `proto/labeld/v1/labels.proto`.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("labeld.v1");
}

pub use generated::*;

/// The encoded descriptor set of the contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/labeld_descriptor.bin"));

#[cfg(test)]
mod tests {
    /// The descriptor set is what reflection serves: it must name the package and the service.
    #[test]
    fn the_descriptor_set_names_the_service() {
        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        assert!(text.contains("labeld.v1"));
        assert!(text.contains("ImageLabels"));
        assert!(text.contains("DetectImageLabelsStream"));
    }
}
