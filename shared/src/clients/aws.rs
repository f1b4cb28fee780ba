//! The AWS SDK's shared configuration (region, credentials, endpoint overrides), loaded once
//! per process, and its HTTPS client, which trusts the AWS roots compiled in.

pub use aws_config::SdkConfig;

/// The AWS SDK's shared configuration (region, credentials, endpoint overrides), loaded from
/// the environment once per process, however many clients are built from it.
/// `native_roots` as in [`https_client`]; the first call's choice holds for the process.
pub async fn sdk_config(native_roots: bool) -> &'static aws_config::SdkConfig {
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> =
        tokio::sync::OnceCell::const_new();
    CONFIG
        .get_or_init(|| async {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(https_client(native_roots))
                .load()
                .await
        })
        .await
}

/// The roots every AWS service endpoint chains to (Amazon Trust Services), compiled in.
pub const AWS_ROOTS: &str = include_str!("../../certs/aws-roots.pem");

/// The SDK's HTTPS client, trusting the AWS roots only, unless `native` asks for the
/// platform's store (a proxy with its own CA, say). The SDK's default loads the platform store
/// at start-up: on Debian that is 146 certificates read twice (the bundle and the folder),
/// 10 to 15 ms of every cold start for roots no AWS endpoint uses.
pub fn https_client(native: bool) -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let trust = if native {
        TrustStore::default()
    } else {
        TrustStore::empty().with_pem_certificate(AWS_ROOTS.as_bytes())
    };
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .unwrap_or_else(|e| panic!("TLS context: {e}"));
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(context)
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_the_five_aws_roots() {
        use rustls_pki_types::pem::PemObject;
        let ders: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(AWS_ROOTS.as_bytes())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(ders.len(), 5);
        // Building the client parses them (it panics on a bad certificate).
        let _ = https_client(false);
    }
}
