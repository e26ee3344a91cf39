use std::time::Duration;

use futures::StreamExt;

use super::*;

const WITHIN: Duration = Duration::from_secs(5);

fn set(nodes: &[&str]) -> Vec<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

#[test]
fn nodes_not_listening_are_unreachable_from_the_start() {
    let mut a = Answers::new(set(&["n1", "n2", "n3", "n1", ""]), |n| n != "n3");
    assert!(!a.done());
    assert_eq!(a.take_unreported(), set(&["n3"]));
    assert_eq!(a.take_unreported(), Vec::<String>::new(), "reported once");
    a.closed("n1");
    a.closed("n2");
    assert!(a.done());
    assert!(a.take_unreported().is_empty());
}

#[test]
fn a_node_that_stops_listening_is_unreachable_at_once() {
    let mut a = Answers::new(set(&["n1", "n2"]), |_| true);
    a.check_listeners(|n| n == "n1");
    assert_eq!(a.take_unreported(), set(&["n2"]));
    assert!(!a.done());
    a.closed("n1");
    assert!(a.done());
}

#[test]
fn a_timeout_gives_up_on_every_node_still_waited_for() {
    let mut a = Answers::new(set(&["n1", "n2", "n3"]), |_| true);
    a.closed("n2");
    a.timed_out();
    assert!(a.done());
    assert_eq!(a.take_unreported(), set(&["n1", "n3"]));
}

fn task(id: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        node_id: node.into(),
        ..Default::default()
    }
}

fn line(node: &str, text: &str) -> LogMessage {
    LogMessage {
        task_id: format!("t-{node}"),
        node_id: node.into(),
        data: text.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Publishes `lines` (then a close) from `node` for the subscription.
async fn answer(broker: &LogBroker, sub: &str, node: &str, lines: Vec<LogMessage>) {
    broker
        .publish(PublishLogsMessage {
            subscription_id: sub.into(),
            messages: lines,
            close: true,
            node_id: node.into(),
        })
        .await;
}

#[tokio::test]
async fn a_stream_with_a_node_down_ends_with_the_lines_and_a_report() {
    let broker = LogBroker::default();
    let mut n1 = Box::pin(broker.listen("n1".into()));
    let mut n2 = Box::pin(broker.listen("n2".into()));
    let tasks = [task("t1", "n1"), task("t2", "n2"), task("t3", "n3")];
    let mut stream = Box::pin(broker.subscribe(&tasks, vec![], false, -1, 0));
    let sub = n1.next().await.unwrap().unwrap();
    assert_eq!(n2.next().await.unwrap().unwrap().id, sub.id);
    answer(&broker, &sub.id, "n1", vec![line("n1", "a")]).await;
    answer(&broker, &sub.id, "n2", vec![line("n2", "b")]).await;
    let got: Vec<LogMessage> = tokio::time::timeout(Duration::from_secs(5), async {
        let mut v = Vec::new();
        while let Some(m) = stream.next().await {
            v.push(m.unwrap());
        }
        v
    })
    .await
    .expect("the stream ends without waiting for n3");
    let data: Vec<&[u8]> = got
        .iter()
        .filter(|m| !m.data.is_empty())
        .map(|m| m.data.as_slice())
        .collect();
    assert_eq!(data, [b"a".as_slice(), b"b".as_slice()]);
    assert_eq!(got.last().unwrap().unavailable_nodes, set(&["n3"]));
}

#[tokio::test]
async fn a_node_lost_while_following_is_reported_and_the_others_go_on() {
    let broker = LogBroker::default();
    let mut n1 = Box::pin(broker.listen("n1".into()));
    let mut n2 = Box::pin(broker.listen("n2".into()));
    let tasks = [task("t1", "n1"), task("t2", "n2")];
    let mut stream = Box::pin(broker.subscribe(&tasks, vec![], true, -1, 0));
    let sub = n1.next().await.unwrap().unwrap();
    n2.next().await.unwrap().unwrap();
    assert!(broker.is_listening("n2"));
    drop(n2);
    let report = tokio::time::timeout(WITHIN, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.unavailable_nodes, set(&["n2"]));
    assert!(!broker.is_listening("n2"));
    broker
        .publish(PublishLogsMessage {
            subscription_id: sub.id.clone(),
            messages: vec![line("n1", "still here")],
            close: false,
            node_id: "n1".into(),
        })
        .await;
    let m = tokio::time::timeout(WITHIN, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.data, b"still here");
}

#[tokio::test]
async fn a_node_marked_down_counts_as_unreachable_until_its_next_session() {
    let broker = LogBroker::default();
    let _n1 = Box::pin(broker.listen("n1".into()));
    assert!(broker.is_listening("n1"));
    broker.node_down("n1");
    assert!(
        !broker.is_listening("n1"),
        "a hung node's stream stays open"
    );
    let mut stream = Box::pin(broker.subscribe(&[task("t1", "n1")], vec![], false, -1, 0));
    let report = tokio::time::timeout(WITHIN, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.unavailable_nodes, set(&["n1"]));
    broker.node_up("n1");
    assert!(broker.is_listening("n1"));
}
