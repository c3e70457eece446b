//! The README's "Several servers" commands, run as written (Redis on the test's own port, the
//! nodes on free ports): two nodes of one Redis serve one room.

use crate::cluster::Node;
use crate::redis_server::RedisServer;
use crate::support::chat;
use crate::support::{within, TEST_PATIENCE};

/// The lines of the section's ```sh block.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Several servers\n")
        .nth(1)
        .expect("README has the section Several servers");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in Several servers");
    block
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "&")
                .map(|w| w.trim_matches('\'').to_owned())
                .collect()
        })
        .filter(|w: &Vec<String>| !w.is_empty())
        .collect()
}

#[tokio::test]
async fn the_readmes_several_servers_commands_serve_one_room_from_two_nodes() {
    within(TEST_PATIENCE, "the test", async {
        let commands = readme_commands();
        let redis_line = &commands[0];
        assert_eq!(redis_line[0], "redis-server", "{commands:?}");
        for flag in ["--save", "--appendonly"] {
            assert!(redis_line.iter().any(|w| w == flag), "{redis_line:?}");
        }
        let redis = RedisServer::start().await;
        let serves: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "h2chat").collect();
        assert_eq!(serves.len(), 2, "two nodes: {commands:?}");
        let mut nodes = Vec::new();
        for words in serves {
            assert_eq!(words[1], "serve");
            // The README's flags, but the test's Redis and a free port (the harness's --addr).
            let at = words.iter().position(|w| w == "--redis").expect("--redis");
            assert!(words[at + 1].starts_with("redis://"), "{words:?}");
            let mut extra: Vec<&str> = Vec::new();
            let mut rest = words[2..].iter();
            while let Some(w) = rest.next() {
                if w == "--addr" || w == "--redis" {
                    rest.next();
                } else {
                    extra.push(w);
                }
            }
            nodes.push(Node::start(&redis.url(), "15", &extra).await);
        }
        let mut alice = nodes[0].join("readme", "alice").await;
        let mut bob = nodes[1].join("readme", "bob").await;
        alice
            .call
            .send(&chat::post("hi from 50051"))
            .await
            .expect("post");
        let on_b = chat::until_text(&mut bob.call, "hi from 50051").await;
        let on_a = chat::until_text(&mut alice.call, "hi from 50051").await;
        assert_eq!(on_a.seq, on_b.seq);
    })
    .await;
}
