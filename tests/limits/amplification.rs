//! CPU a client can make the server spend: `grpc.testing.TestService` is served only with
//! `--interop`, and then a request's responses are bounded, their count checked before the
//! request is decoded.
//!
//! The attacks (issue 12): a gzip'd 4 MiB request with 2 million `response_parameters` entries
//! (3.9 KB uploaded; 24 MB per call decoded, other clients stalled 1.1 s), and 16 requests for 200
//! gzip'd 4 MiB responses each (3.9 GB of payload built and compressed).

use h2chat::pb::grpc::testing::{BoolValue, ResponseParameters, StreamingOutputCallRequest};

use crate::harness::{
    gzip_message, message, mib, well_behaved_check, within, Attacker, Server, PATIENCE,
};

/// The server's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).expect("stat");
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The `grpc-status` of a Trailers-Only answer.
async fn trailers_only_status(response: h2::client::ResponseFuture) -> String {
    let resp = within(PATIENCE, "a Trailers-Only answer", response)
        .await
        .expect("answer");
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interop_service_is_served_only_when_asked_for() {
    for (args, want) in [(&[][..], "12"), (&["--interop"][..], "0")] {
        let server = Server::start(args);
        let mut client = Attacker::connect(server.addr, 65_535).await;
        let (response, _tx) = client
            .call(
                "/grpc.testing.TestService/EmptyCall",
                &[],
                message(&()),
                true,
            )
            .await;
        let resp = within(PATIENCE, "EmptyCall's answer", response)
            .await
            .expect("answer");
        let status = match resp.headers().get("grpc-status") {
            Some(code) => code.to_str().unwrap_or_default().to_owned(),
            None => {
                let mut body = resp.into_body();
                while let Some(chunk) = body.data().await {
                    chunk.expect("body");
                }
                let trailers = body.trailers().await.expect("trailers").expect("present");
                trailers["grpc-status"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        assert_eq!(status, want, "with {args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_response_parameters_are_refused_before_they_are_decoded() {
    let server = Server::start(&["--interop"]);
    well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();
    let ticks = cpu_ticks(&server);
    let request = gzip_message(&prost::Message::encode_to_vec(
        &StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters::default(); 2_000_000],
            ..StreamingOutputCallRequest::default()
        },
    ));
    eprintln!(
        "2M response parameters: {} bytes on the wire",
        request.len()
    );
    let mut attacker = Attacker::connect(server.addr, 0).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (response, _tx) = attacker
            .call(
                "/grpc.testing.TestService/StreamingOutputCall",
                &[("grpc-encoding", "gzip")],
                request.clone(),
                true,
            )
            .await;
        calls.push(response);
    }
    well_behaved_check(server.addr).await;
    for response in calls {
        assert_eq!(
            trailers_only_status(response).await,
            "8",
            "RESOURCE_EXHAUSTED"
        );
    }
    let grown = server.peak_rss().saturating_sub(base);
    let spent = cpu_ticks(&server) - ticks;
    eprintln!(
        "16 such requests: grown {:.1} MiB, {spent} ticks of CPU",
        mib(grown)
    );
    // Each is inflated (4 MiB) and scanned, never decoded: a few at a time on two workers.
    assert!(grown <= 32 << 20, "grew by {:.1} MiB", mib(grown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_responses_of_4_mib_are_refused_before_any_is_built() {
    let server = Server::start(&["--interop"]);
    well_behaved_check(server.addr).await;
    let ticks = cpu_ticks(&server);
    let request = message(&StreamingOutputCallRequest {
        response_parameters: vec![
            ResponseParameters {
                size: 4 << 20,
                compressed: Some(BoolValue { value: true }),
                ..ResponseParameters::default()
            };
            200
        ],
        ..StreamingOutputCallRequest::default()
    });
    let mut attacker = Attacker::connect(server.addr, 65_535).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (response, _tx) = attacker
            .call(
                "/grpc.testing.TestService/StreamingOutputCall",
                &[("grpc-accept-encoding", "gzip")],
                request.clone(),
                true,
            )
            .await;
        calls.push(response);
    }
    for response in calls {
        assert_eq!(
            trailers_only_status(response).await,
            "8",
            "RESOURCE_EXHAUSTED"
        );
    }
    well_behaved_check(server.addr).await;
    let spent = cpu_ticks(&server) - ticks;
    eprintln!("16 requests for 800 MiB each: {spent} ticks of server CPU");
    // Building and compressing one 4 MiB response alone takes about 10 ms; 3,200 would be
    // tens of seconds. Refusing them all is well under one.
    assert!(spent < 100, "the server spent {spent} ticks");
}
