//! Reports from small hand-written traces: the series, the recoveries and the rendered output.

use shoal_reports::{analyze, parse_trace, render};

fn trace() -> String {
    let lines = [
        r#"{"time_ms":1000,"node":"manager-1","kind":"raft.state","fields":{"role":"Leader","term":1}}"#,
        r#"{"time_ms":1100,"node":"manager-1","kind":"task.created","fields":{"task":"t1","service":"web"}}"#,
        r#"{"time_ms":1100,"node":"manager-1","kind":"task.created","fields":{"task":"t2","service":"web"}}"#,
        r#"{"time_ms":1500,"node":"worker-1","kind":"task.state","fields":{"task_id":"t1","state":"running","node_id":"n1"}}"#,
        r#"{"time_ms":1600,"node":"worker-2","kind":"task.state","fields":{"task_id":"t2","state":"running","node_id":"n2"}}"#,
        r#"{"time_ms":3000,"node":"supervisor","kind":"fault.crash","fields":{"host":"worker-2"}}"#,
        r#"{"time_ms":6000,"node":"manager-1","kind":"task.desired","fields":{"task":"t2","desired":"shutdown"}}"#,
        r#"{"time_ms":6000,"node":"manager-1","kind":"task.created","fields":{"task":"t3","service":"web"}}"#,
        r#"{"time_ms":6500,"node":"worker-1","kind":"task.state","fields":{"task_id":"t3","state":"running","node_id":"n1"}}"#,
        r#"{"time_ms":7000,"node":"manager-2","kind":"raft.state","fields":{"role":"Leader","term":2}}"#,
        "",
    ];
    lines.join("\n")
}

#[test]
fn replicas_leaders_and_recovery_come_out_of_the_trace() {
    let events = parse_trace("t.jsonl", &trace()).expect("valid trace");
    let analysis = analyze(&events);
    assert_eq!(analysis.replicas["web"], vec![(0.5, 1), (0.6, 2), (5.0, 1), (5.5, 2)]);
    assert_eq!(analysis.leaders, vec![(0.0, 1, "manager-1".to_string()), (6.0, 2, "manager-2".to_string())]);
    assert_eq!(analysis.faults, vec![(2.0, "crash worker-2".to_string())]);
    assert_eq!(analysis.recoveries.len(), 1);
    assert_eq!(analysis.recoveries[0].converged_after_s, Some(3.5), "back to 2 running 3.5 s after the crash");
    assert_eq!(analysis.tasks_per_node.get("n1"), Some(&2));
}

#[test]
fn plots_and_summary_render() {
    let analysis = analyze(&parse_trace("t.jsonl", &trace()).unwrap());
    let svg = render::replicas_svg(&analysis, "run: running tasks").unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("web"), "an SVG with the service in its legend");
    let svg = render::leaders_svg(&analysis, "run: leaders").unwrap();
    assert!(svg.contains("manager-2"));
    let md = render::summary_markdown(&[("a".into(), analysis.clone()), ("b".into(), analysis)]);
    assert!(md.contains("| 2.00 | crash worker-2 | 3.50 |"), "{md}");
    assert!(md.contains("median 3.50"), "{md}");
}

#[test]
fn a_garbled_line_is_an_error_with_its_line_number() {
    let err = parse_trace("x.jsonl", "{\"time_ms\":1,\"node\":\"a\",\"kind\":\"k\"}\nnot json\n").unwrap_err();
    assert!(err.to_string().starts_with("x.jsonl:2: not a trace event"), "{err}");
}

#[test]
fn a_state_report_traced_before_its_creation_still_counts() {
    let text = [
        r#"{"time_ms":10,"node":"worker-1","kind":"task.state","fields":{"task_id":"t1","state":"running","node_id":"n1"}}"#,
        r#"{"time_ms":10,"node":"manager-1","kind":"task.created","fields":{"task":"t1","service":"web"}}"#,
    ]
    .join("\n");
    let analysis = analyze(&parse_trace("t.jsonl", &text).unwrap());
    assert_eq!(analysis.replicas["web"], vec![(0.0, 1)]);
}

#[test]
fn client_requests_are_counted_per_second_and_plotted() {
    let lines = [
        r#"{"time_ms":1000,"node":"supervisor","kind":"scenario.start","fields":{}}"#,
        r#"{"time_ms":1510,"node":"client","kind":"client.request","fields":{"client":"load1","seq":1,"sent_ms":1500,"done_ms":1510,"via":"manager-1","answer":"web.1.a","error":null}}"#,
        r#"{"time_ms":1620,"node":"client","kind":"client.request","fields":{"client":"load1","seq":2,"sent_ms":1600,"done_ms":1620,"via":"manager-1","answer":"web.2.b","error":null}}"#,
        r#"{"time_ms":2000,"node":"supervisor","kind":"fault.crash","fields":{"host":"worker-2"}}"#,
        r#"{"time_ms":2100,"node":"client","kind":"client.request","fields":{"client":"load1","seq":3,"sent_ms":1900,"done_ms":2100,"via":"manager-1","answer":null,"error":"connection reset"}}"#,
        r#"{"time_ms":3000,"node":"client","kind":"client.request","fields":{"client":"load1","seq":4,"sent_ms":2990,"done_ms":3000,"via":"manager-1","answer":"web.1.a","error":null}}"#,
    ];
    let analysis = analyze(&parse_trace("c.jsonl", &lines.join("\n")).unwrap());
    let requests = &analysis.clients["load1"];
    assert_eq!(requests.len(), 4);
    assert_eq!((requests[2].sent_s, requests[2].latency_ms, requests[2].ok), (0.9, 200, false));
    let per_second = &analysis.requests_per_second()["load1"];
    assert_eq!(per_second, &vec![(0.0, 2, 1), (1.0, 1, 0), (2.0, 0, 0)], "sent in second 0: two ok, one failed");
    let svg = render::requests_svg(&analysis, "run: client requests").unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("load1: failed"), "the failures are in the legend");
    let summary = render::summary_markdown(&[("run".to_string(), analysis)]);
    assert!(summary.contains("![requests](run-requests.svg)"), "{summary}");
    assert!(summary.contains("| load1 | 4 | 1 | 10 | 20 | 20 |"), "{summary}");
}
