//! Reading a Prometheus text-format scrape, written from the format's description (not the
//! exporter's code): `name{label="value",...} number` lines, `#` lines are comments.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::PATIENCE;

/// One sample: its name and labels.
type Series = (String, BTreeMap<String, String>);

/// Every sample of one scrape.
#[derive(Debug)]
pub struct Scrape {
    samples: Vec<(Series, f64)>,
    /// The body as served.
    pub text: String,
}

impl Scrape {
    /// GETs `/metrics` from `addr` over plain HTTP/1.1 and parses the body.
    pub async fn get(addr: SocketAddr) -> Scrape {
        let text = tokio::time::timeout(PATIENCE, async {
            let mut socket = TcpStream::connect(addr).await.expect("connect to metrics");
            socket
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
                .await
                .expect("send GET");
            let mut response = Vec::new();
            socket
                .read_to_end(&mut response)
                .await
                .expect("read response");
            String::from_utf8(response).expect("UTF-8 response")
        })
        .await
        .expect("metrics answered within PATIENCE");
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
        assert!(head.starts_with("HTTP/1.1 200"), "scrape answered {head}");
        let body = dechunk(head, body);
        Scrape {
            samples: body.lines().filter_map(parse_sample).collect(),
            text: body,
        }
    }

    /// Scrapes until `ready` holds, at most [`PATIENCE`]. A call's end is counted in its own task
    /// right after its handler returns, which may be just after the leave the test has seen:
    /// nothing announces the count, so this looks again (every 10 ms) until it is there.
    pub async fn until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let scrape = Scrape::get(addr).await;
            if ready(&scrape) {
                return scrape;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scrape never showed {what} within {PATIENCE:?}:\n{}",
                scrape.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The value of the sample named `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|((n, l), _)| n == name && *l == want)
            .map(|(_, v)| *v)
    }

    /// Like [`value`](Scrape::value), failing the test when the sample is missing.
    pub fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }

    /// Every label set of `name`.
    pub fn label_sets(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), _)| l.clone())
            .collect()
    }
}

/// The body, joined from its chunks when the response is chunked.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// `name{a="1",b="x"} 3` → the series and 3.
fn parse_sample(line: &str) -> Option<(Series, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            // Label values here never hold `",` (they are method names, codes and reasons).
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"")?;
                labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
            (name, labels)
        }
    };
    Some(((name.to_owned(), labels), value))
}
