//! What the server answers: `/metrics`, `/healthz`, 404 for any other path
//! and 405 for a method other than GET (or HEAD) on those two.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
};

use super::health::Health;
use crate::{
    kernel::clock::monotonic_ns,
    report::prometheus::{Snapshot, render},
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The state the pages are made from.
pub struct Site {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub health: Arc<Health>,
}

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl Site {
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path != "/metrics" && path != "/healthz" {
            let body = "tcptrace serves /metrics and /healthz\n".to_owned();
            return page(StatusCode::NOT_FOUND, TEXT, body);
        }
        // hyper leaves out the body of a response to HEAD.
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let body = format!("{path} answers GET only\n");
            let mut r = page(StatusCode::METHOD_NOT_ALLOWED, TEXT, body);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == "/healthz" {
            let (ok, text) = self.health.check(monotonic_ns());
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return page(status, TEXT, text);
        }
        match self.metrics() {
            Ok(body) => page(StatusCode::OK, OPENMETRICS, body),
            Err(_) => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "encoding failed\n".to_owned(),
            ),
        }
    }

    /// The page, encoded from a copy of the snapshot: the event loop waits
    /// on the lock for the copy only.
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        let copy = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        render(&Arc::new(Mutex::new(copy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: Method, uri: &str) -> (StatusCode, Option<String>) {
        let site = Site {
            snapshot: Arc::default(),
            health: Arc::new(Health::new(3)),
        };
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let r = site.respond(&req);
        let allow = r
            .headers()
            .get(ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), allow)
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(status(Method::GET, "/metrics").0, StatusCode::OK);
        assert_eq!(status(Method::GET, "/metrics?x=1").0, StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/healthz").0, StatusCode::OK);
        assert_eq!(status(Method::GET, "/").0, StatusCode::NOT_FOUND);
        assert_eq!(status(Method::POST, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            (StatusCode::METHOD_NOT_ALLOWED, Some("GET, HEAD".to_owned()))
        );
    }
}
