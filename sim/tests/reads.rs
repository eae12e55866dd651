//! Reads through any manager are linearizable, and a leader cut off in a minority stops leading.
//!
//! - A write acknowledged through one manager is visible to a read through another at once, even
//!   when that manager's copy of the store lags (its link to the leader is slow): followers forward
//!   reads to the leader, which confirms its leadership with a quorum before it reads.
//! - openraft keeps a partitioned leader in the Leader role; shoal's leadership watch drops it once
//!   the quorum's acknowledgement is stale, so the old leader's orchestrator and node-down detection
//!   stop (`manager.follower`), and its control API refuses reads and writes with Swarm's message.
#![cfg(madsim)]

use std::time::Duration;

use shoal_core::api::ServiceSpec;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult};
use shoal_core::rpc::{self, Channel};
use shoal_core::trace::TraceEvent;
use shoal_sim::cluster::{ClusterShape, SimCluster, PORT};
use shoal_sim::net::{LinkPolicy, SimTransport};

/// A control request to one named manager (not "the leader first", as `SimCluster::control` does).
async fn via(transport: &SimTransport, manager: &str, request: ControlRequest) -> ControlResult {
    let addr = format!("{manager}:{PORT}");
    rpc::call::<_, ControlResult>(transport, &addr, Channel::Control, &request, Duration::from_secs(30))
        .await
        .unwrap_or_else(|err| Err(ControlError::Unavailable(err.to_string())))
}

fn events_of<'a>(trace: &'a [TraceEvent], node: &'a str, kind: &'a str) -> impl Iterator<Item = &'a TraceEvent> {
    trace.iter().filter(move |e| e.node == node && e.kind == kind)
}

#[madsim::test]
async fn a_write_through_one_manager_is_read_through_another_at_once() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 0 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(3)).await;
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<String> =
        ["manager-1", "manager-2", "manager-3"].iter().map(|s| s.to_string()).filter(|m| *m != leader).collect();
    let (writer, reader) = (&followers[0], &followers[1]);
    // The reader's copy lags: the leader's appends reach it 40-60 ms late (a round trip stays inside
    // openraft's append timeout, the heartbeat interval), while the writer keeps the quorum fast. A
    // local read on the reader would miss fresh writes.
    let slow = LinkPolicy { delay_min: Duration::from_millis(40), delay_max: Duration::from_millis(60), loss: 0.0 };
    cluster.set_link(&leader, reader, slow);
    let client = cluster.net().transport("reads-client:1");
    let mut lagged = 0;
    for i in 0..5 {
        let name = format!("web-{i}");
        let created =
            via(&client, writer, ControlRequest::ServiceCreate { spec: ServiceSpec::new(&name, "nginx:1.25") })
                .await
                .expect("service create through a follower");
        let ControlResponse::Created { id } = created else { panic!("unexpected reply {created:?}") };
        let had_it = cluster.node(reader).expect("reader runs").store().view(|s| s.services.contains_key(&id));
        lagged += usize::from(!had_it);
        match via(&client, reader, ControlRequest::ServiceInspect { service: name.clone() }).await {
            Ok(ControlResponse::Service(view)) => assert_eq!(view.service.id, id),
            other => {
                panic!("read of {name} via {reader} right after the write (local copy had it: {had_it}): {other:?}")
            }
        }
        let listed = via(&client, reader, ControlRequest::ServiceList).await.expect("service ls");
        let ControlResponse::Services(services) = listed else { panic!("unexpected reply {listed:?}") };
        assert_eq!(services.len(), i + 1, "service ls via {reader} sees every acknowledged create");
    }
    assert!(lagged > 0, "the test means nothing unless the reader's own copy lagged");
    // The leader answers its own reads too.
    assert!(via(&client, &leader, ControlRequest::ServiceInspect { service: "web-4".into() }).await.is_ok());
}

#[madsim::test]
async fn a_leader_cut_off_in_a_minority_stops_leading() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 2 }).await.expect("cluster starts");
    cluster
        .control(ControlRequest::ServiceCreate { spec: ServiceSpec::new("web", "nginx:1.25") })
        .await
        .expect("create");
    madsim::time::sleep(Duration::from_secs(5)).await;
    let old = cluster.leader().expect("a leader");
    let rest: Vec<String> = cluster.node_names().into_iter().filter(|n| *n != old).collect();
    let cut_ms = shoal_core::env::runtime::unix_millis();
    cluster.partition(std::slice::from_ref(&old), &rest);
    madsim::time::sleep(Duration::from_secs(8)).await;

    let trace = cluster.trace();
    let stepped_down = events_of(&trace, &old, "manager.follower")
        .find(|e| e.time_ms > cut_ms)
        .unwrap_or_else(|| panic!("{old} never stopped leading after the partition"));
    // An election timeout (2 s) without a quorum's ack, checked every heartbeat.
    assert!(stepped_down.time_ms <= cut_ms + 3_000, "stepped down {} ms after the cut", stepped_down.time_ms - cut_ms);
    assert!(
        events_of(&trace, &old, "orchestrator.stop").any(|e| e.time_ms > cut_ms),
        "the orchestrator stops with leadership"
    );
    // Afterwards the minority side does nothing a leader would: no proposals from its orchestrator,
    // no nodes marked down.
    let late: Vec<&TraceEvent> = trace
        .iter()
        .filter(|e| e.node == old && e.time_ms > stepped_down.time_ms)
        .filter(|e| e.kind.starts_with("orchestrator.") || e.kind == "node.down" || e.kind == "manager.leading")
        .collect();
    assert!(late.is_empty(), "{old} still acts as leader: {late:?}");
    let new = cluster.leader();
    assert!(new.as_ref().is_some_and(|n| *n != old), "the majority elected a new leader ({new:?})");

    // Its control API refuses with Swarm's lost-quorum message rather than serve stale state.
    let client = cluster.net().transport("reads-client:1");
    let spec = ServiceSpec::new("api", "nginx:1.25");
    assert_eq!(via(&client, &old, ControlRequest::ServiceCreate { spec }).await, Err(ControlError::NoLeader));
    assert_eq!(via(&client, &old, ControlRequest::ServiceList).await, Err(ControlError::NoLeader));

    // Healed, it follows the new leader and serves reads again.
    cluster.heal();
    madsim::time::sleep(Duration::from_secs(5)).await;
    match via(&client, &old, ControlRequest::ServiceInspect { service: "web".into() }).await {
        Ok(ControlResponse::Service(_)) => {}
        other => panic!("read via {old} after the heal: {other:?}"),
    }
}
