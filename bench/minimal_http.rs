//! The smallest `lambda_http` function: the yardstick `make bench` measures ingest's INIT
//! against (built the same way, `cargo lambda build --release`, and started under the same
//! emulator in the same run). It answers every request 200 and does nothing else.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

async fn answer(_: Request) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(200)
        .body(Body::from("ok"))
        .map_err(Box::new)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(answer)).await
}
