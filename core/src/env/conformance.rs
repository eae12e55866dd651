//! One conformance suite per instance seam: each body runs against the simulator's arm (in
//! `shoal-sim`'s tests) and against the daemon's arm (in `shoal`'s tests), so the two worlds cannot
//! drift apart. Each function panics with a message naming the broken promise.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::executor::{ContainerSpec, ContainerState, LABEL_TASK_ID};
use super::transport::Peer;
use super::{Disk, DiskError, Executor, ExecutorError, Handler, Transport, TransportError};

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, _peer: Peer, request: Vec<u8>) -> Vec<u8> {
        if request == b"hang" {
            crate::env::sleep(Duration::from_secs(3600)).await;
        }
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&request);
        reply
    }
}

/// `server` listens at `server_addr`; `client` calls it. `dead_addr` is an address nobody serves.
pub async fn transport(server: Arc<dyn Transport>, server_addr: &str, client: Arc<dyn Transport>, dead_addr: &str) {
    server.serve(Arc::new(Echo)).await.expect("serve must succeed on a free address");
    let second = Duration::from_secs(5);

    let reply = client.call(server_addr, b"ping".to_vec(), second).await.expect("a call to a live peer must answer");
    assert_eq!(reply, b"echo:ping", "the reply must be the handler's bytes, unchanged");

    // Frames of every size keep their boundaries, including empty and large ones.
    for size in [0usize, 1, 4096, 1 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let reply = client.call(server_addr, body.clone(), second).await.expect("large frames must pass");
        assert_eq!(&reply[5..], &body[..], "a {size}-byte frame must arrive intact");
    }

    // Concurrent calls on one transport each get their own reply.
    let mut handles = Vec::new();
    for i in 0..8u8 {
        let client = client.clone();
        let addr = server_addr.to_string();
        handles.push(crate::env::spawn(async move { client.call(&addr, vec![i], second).await }));
    }
    for (i, handle) in handles.into_iter().enumerate() {
        let reply = handle.await.expect("task").expect("concurrent call");
        assert_eq!(reply, [b'e', b'c', b'h', b'o', b':', i as u8], "reply {i} must match its request");
    }

    // A peer that does not answer in time gives a timeout, not a hang.
    let started = crate::env::now();
    let err = client.call(server_addr, b"hang".to_vec(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "a silent peer must time out, got {err:?}");
    assert!(crate::env::now() - started < Duration::from_secs(3), "the deadline must be honoured");

    // The connection survives a timed-out call.
    let reply = client.call(server_addr, b"again".to_vec(), second).await.expect("call after a timeout");
    assert_eq!(reply, b"echo:again");

    // Nobody home: a clear error within the deadline.
    let err = client.call(dead_addr, b"ping".to_vec(), Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { .. } | TransportError::Timeout { .. }),
        "a dead address must be unreachable, got {err:?}"
    );
}

/// The disk promises: reads see appends, atomic writes replace, names are checked, lists are sorted.
pub async fn disk(disk: Arc<dyn Disk>) {
    assert_eq!(disk.read("raft/log").await.unwrap(), None, "a fresh disk has no files");
    disk.append("raft/log", b"one,").await.unwrap();
    disk.append("raft/log", b"two,").await.unwrap();
    assert_eq!(disk.read("raft/log").await.unwrap().as_deref(), Some(&b"one,two,"[..]), "reads see appends");
    disk.sync("raft/log").await.unwrap();
    disk.append("raft/log", b"three").await.unwrap();
    assert_eq!(disk.read("raft/log").await.unwrap().as_deref(), Some(&b"one,two,three"[..]));

    disk.write_atomic("raft/vote", b"v1").await.unwrap();
    disk.write_atomic("raft/vote", b"v2-longer").await.unwrap();
    assert_eq!(disk.read("raft/vote").await.unwrap().as_deref(), Some(&b"v2-longer"[..]), "atomic write replaces");
    disk.write_atomic("identity", b"node").await.unwrap();

    assert_eq!(disk.list().await.unwrap(), vec!["identity", "raft/log", "raft/vote"], "list is sorted");
    disk.remove("raft/vote").await.unwrap();
    disk.remove("raft/vote").await.expect("removing a missing file is not an error");
    assert_eq!(disk.read("raft/vote").await.unwrap(), None);

    for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b"] {
        let err = disk.read(bad).await.unwrap_err();
        assert!(matches!(err, DiskError::InvalidName { .. }), "{bad:?} must be refused, got {err:?}");
        assert!(disk.write_atomic(bad, b"x").await.is_err(), "{bad:?} must not be writable");
    }
}

/// What an executor arm needs to run the suite: a local image and commands in its vocabulary.
pub struct ExecutorFixture {
    pub image: String,
    /// Runs until stopped.
    pub run_forever: Vec<String>,
    /// Exits by itself with code 3.
    pub exit_3: Vec<String>,
    /// An image that is neither local nor pullable.
    pub missing_image: String,
    /// A prefix for container names, unique per test run.
    pub name_prefix: String,
}

/// The container lifecycle the agent relies on.
pub async fn executor(executor: Arc<dyn Executor>, fixture: ExecutorFixture) {
    executor.prepare_image(&fixture.image).await.expect("a local image is ready without a pull");
    let err = executor.prepare_image(&fixture.missing_image).await.unwrap_err();
    assert!(matches!(err, ExecutorError::ImageUnavailable { .. }), "a missing image must be refused, got {err:?}");

    let task_label = format!("{}-task", fixture.name_prefix);
    let spec = |suffix: &str, command: &[String]| ContainerSpec {
        name: format!("{}-{suffix}", fixture.name_prefix),
        image: fixture.image.clone(),
        command: command.to_vec(),
        env: vec!["SHOAL_TEST=1".into()],
        labels: [(LABEL_TASK_ID.to_string(), task_label.clone())].into_iter().collect(),
        ..ContainerSpec::default()
    };

    // A container that exits by itself reports its code.
    let exits = executor.create(&spec("exits", &fixture.exit_3)).await.expect("create");
    assert_eq!(executor.inspect(&exits).await.unwrap().state, ContainerState::Created);
    executor.start(&exits).await.expect("start");
    assert_eq!(executor.wait(&exits).await.expect("wait"), 3, "the exit code must come back");
    assert_eq!(executor.inspect(&exits).await.unwrap().state, ContainerState::Exited { code: 3 });

    // A long-running container runs until stopped, and is found by its labels.
    let runs = executor.create(&spec("runs", &fixture.run_forever)).await.expect("create");
    executor.start(&runs).await.expect("start");
    assert_eq!(executor.inspect(&runs).await.unwrap().state, ContainerState::Running);
    let listed = executor.list(&[(LABEL_TASK_ID.to_string(), task_label.clone())]).await.unwrap();
    let mut ids: Vec<_> = listed.iter().map(|c| c.id.clone()).collect();
    let mut expected = vec![exits.clone(), runs.clone()];
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "list by label must find exactly our containers");
    executor.stop(&runs, Duration::from_secs(2)).await.expect("stop");
    assert!(
        matches!(executor.inspect(&runs).await.unwrap().state, ContainerState::Exited { .. }),
        "a stopped container has exited"
    );

    for id in [&exits, &runs] {
        executor.remove(id).await.expect("remove");
        let err = executor.inspect(id).await.unwrap_err();
        assert!(matches!(err, ExecutorError::NoSuchContainer { .. }), "a removed container is gone, got {err:?}");
    }
    assert!(executor.list(&[(LABEL_TASK_ID.to_string(), task_label)]).await.unwrap().is_empty());
}
