//! The HTTP client under [`super::AwsJsonClient`]: hyper's pooled HTTP/1.1 client over rustls
//! (on ring, the TLS stack the SDK and reqwest use here too), trusting the Amazon Trust Services
//! roots compiled into the binary, or the platform's with `AWS_TLS_ROOTS=system`. Keep-alive
//! connections, Nagle off.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled client; `connect` bounds opening a connection.
pub fn client(connect: Option<Duration>) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let system = crate::config::process_env()
        .raw("AWS_TLS_ROOTS")
        .is_some_and(|v| v.eq_ignore_ascii_case("system"));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if system {
        builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| format!("the system's TLS roots: {e}"))?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(crate::aws::AWS_ROOT_CAS) {
            let cert = cert.map_err(|e| format!("the compiled-in TLS roots: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the compiled-in TLS roots: {e}"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder.with_tls_config(config)
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        // Shorter than the services' own idle limits, so a frozen-then-thawed environment
        // rarely meets a connection the far end has closed.
        .pool_idle_timeout(Duration::from_secs(50))
        .build(https))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_in_roots_make_a_client() {
        assert!(super::client(None).is_ok());
    }
}
