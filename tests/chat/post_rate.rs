//! `--max-post-rate` holds a fast sender back by flow control: the server stops reading a
//! member's stream until the member may post again, so its bytes wait in the member's HTTP/2
//! window, and once that is full the client's own sends wait. Nothing is cut off, dropped or
//! buffered by the server beyond the window.

use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::TestServer;
use crate::support::{within, TEST_PATIENCE};
use h2chat::grpc::client::Channel;
use h2chat::pb::chat::v1::EventKind;
use h2chat::services::app::AppConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_the_post_rate_waits_on_its_full_window() {
    within(
        TEST_PATIENCE,
        "the whole of test a_sender_over_the_post_rate_waits_on_its_full_window",
        async {
            const POSTS: usize = 40;
            let mut config = AppConfig::default();
            config.chat.max_post_rate = 20.0;
            config.chat.post_burst = 5.0;
            // The smallest stream window the server allows: 16 KiB, five of these posts.
            config.server.initial_stream_window_bytes = 16 << 10;
            let server = TestServer::start(config).await;
            let ch = Channel::connect(server.addr).await.expect("connect");
            let mut fast = join(&ch, "flow", "fast").await;

            // 40 posts of 3 KB: 120 KB, seven windows' worth. The server takes 5 at once, then
            // 20 a second; a send returns once its bytes fit in the window, so the last one
            // waits for the server to have taken about 34: (34 - 5) / 20 s = 1.45 s at least.
            let text = "x".repeat(3000);
            let started = Instant::now();
            for i in 0..POSTS {
                fast.send(&post(&format!("{i:02} {text}")))
                    .await
                    .expect("post");
            }
            let sending = started.elapsed();
            assert!(
                sending >= Duration::from_secs(1),
                "40 posts over the rate were all sent in {sending:?}: the server read past the rate"
            );

            // Nothing lost, in order, and the member is still there.
            let mut texts = Vec::new();
            while texts.len() < POSTS {
                let m = next(&mut fast).await;
                if kind(&m) == EventKind::Message {
                    texts.push(m.text.get(..2).unwrap_or_default().to_owned());
                }
            }
            let want: Vec<String> = (0..POSTS).map(|i| format!("{i:02}")).collect();
            assert_eq!(texts, want, "every post, in order");
            fast.send(&post("after")).await.expect("post");
            until_text(&mut fast, "after").await;
        },
    )
    .await;
}
