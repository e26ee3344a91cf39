//! The log broker client: listens for log subscriptions from the manager and
//! publishes the matching lines of this node's tasks back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{ListenSubscriptionsRequest, LogMessage, LogSubscription, PublishLogsMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::logs::{LogLine, LogQuery, LogStore, TaskLogMeta};
use crate::session::Backoff;

/// Lines per PublishLogsMessage.
const BATCH: usize = 100;
/// How often a followed log file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(150);
/// How often a followed subscription looks for new tasks of its services.
const NEW_TASKS_POLL: Duration = Duration::from_secs(1);
/// How long to wait for the broker to acknowledge a finished publication.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps a ListenSubscriptions stream open until `shutdown`, reconnecting
/// with backoff, and runs one publisher per subscription.
pub(crate) async fn run_log_broker(
    client: DispatcherClient<Channel>,
    config: Arc<AgentConfig>,
    store: LogStore,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    // Publishers by subscription id; each token is cancelled when the
    // publisher ends or the subscription closes.
    let mut active: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let req = ListenSubscriptionsRequest {
            node_id: config.node_id.clone(),
        };
        let mut c = client.clone();
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = c.listen_subscriptions(req) => r,
        };
        match opened {
            Ok(resp) => {
                backoff.reset();
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(sub)) => {
                            handle(&client, &config, &store, &shutdown, &mut active, sub)
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "log subscription stream failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "listen for log subscriptions"),
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

fn handle(
    client: &DispatcherClient<Channel>,
    config: &AgentConfig,
    store: &LogStore,
    shutdown: &CancellationToken,
    active: &mut HashMap<String, CancellationToken>,
    sub: LogSubscription,
) {
    active.retain(|_, t| !t.is_cancelled());
    if sub.close {
        if let Some(t) = active.remove(&sub.id) {
            t.cancel();
        }
        return;
    }
    if active.contains_key(&sub.id) {
        return;
    }
    let token = shutdown.child_token();
    active.insert(sub.id.clone(), token.clone());
    let client = client.clone();
    let store = store.clone();
    let node_id = config.node_id.clone();
    tokio::spawn(async move {
        publish(client, store, node_id, sub, token.clone()).await;
        token.cancel();
    });
}

/// Publishes one subscription's lines; returns when done or cancelled.
pub(crate) async fn publish(
    mut client: DispatcherClient<Channel>,
    store: LogStore,
    node_id: String,
    sub: LogSubscription,
    cancel: CancellationToken,
) {
    let (tx, rx) = mpsc::channel::<PublishLogsMessage>(16);
    let call = tokio::spawn(async move { client.publish_logs(ReceiverStream::new(rx)).await });
    let _ = publish_lines(&tx, &store, &node_id, &sub, &cancel).await;
    let _ = tx
        .send(PublishLogsMessage {
            subscription_id: sub.id.clone(),
            messages: Vec::new(),
            close: true,
            node_id: node_id.clone(),
        })
        .await;
    drop(tx);
    match tokio::time::timeout(CLOSE_TIMEOUT, call).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, sub = %sub.id, "publish logs"),
        _ => {}
    }
}

/// Sends the lines (and, following, new ones until cancelled, including the
/// lines of tasks of the subscription's services that start on this node
/// meanwhile). Err when the broker went away.
async fn publish_lines(
    tx: &mpsc::Sender<PublishLogsMessage>,
    store: &LogStore,
    node_id: &str,
    sub: &LogSubscription,
    cancel: &CancellationToken,
) -> Result<(), ()> {
    let query = LogQuery {
        tail: sub.tail,
        since_ns: sub.since_ns,
    };
    let mut followed = Vec::new();
    for id in sub.task_ids.iter().filter(|id| store.has_task(id)) {
        followed.push(start(tx, store, node_id, &sub.id, id, query).await?);
    }
    let watch_services = sub.follow && !sub.service_ids.is_empty();
    if !sub.follow || (followed.is_empty() && !watch_services) {
        return Ok(());
    }
    // Every task already decided on: followed, or of another service. The
    // first look (at once) catches tasks that started between the manager
    // listing the service's tasks and this node receiving the subscription.
    let mut known: HashSet<String> = followed.iter().map(|(m, _)| m.task_id.clone()).collect();
    let mut look_for_new = tokio::time::interval(NEW_TASKS_POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tx.closed() => return Err(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = look_for_new.tick(), if watch_services => {
                for id in store.task_ids().await {
                    if known.contains(&id) {
                        continue;
                    }
                    let meta = store.read_meta(&id).await;
                    if meta.service_id.is_empty() {
                        continue; // its metadata is not written yet: next time
                    }
                    known.insert(id.clone());
                    if sub.service_ids.contains(&meta.service_id) {
                        // A task that started after the subscription: all of it.
                        let all = LogQuery { tail: -1, since_ns: sub.since_ns };
                        followed.push(start(tx, store, node_id, &sub.id, &id, all).await?);
                    }
                }
            }
        }
        for (meta, offset) in followed.iter_mut() {
            if let Ok((lines, next)) = store.read_from(&meta.task_id, *offset).await {
                *offset = next;
                send_lines(tx, &sub.id, meta, lines).await?;
            }
        }
    }
}

/// Sends a task's lines matching `query`; returns what following it needs.
async fn start(
    tx: &mpsc::Sender<PublishLogsMessage>,
    store: &LogStore,
    node_id: &str,
    sub_id: &str,
    task_id: &str,
    query: LogQuery,
) -> Result<(TaskLogMeta, u64), ()> {
    let mut meta = store.read_meta(task_id).await;
    if meta.node_id.is_empty() {
        meta.node_id = node_id.to_string();
    }
    let (lines, offset) = store.read(task_id, query).await.unwrap_or_default();
    send_lines(tx, sub_id, &meta, lines).await?;
    Ok((meta, offset))
}

async fn send_lines(
    tx: &mpsc::Sender<PublishLogsMessage>,
    sub_id: &str,
    meta: &TaskLogMeta,
    lines: Vec<LogLine>,
) -> Result<(), ()> {
    for chunk in lines.chunks(BATCH) {
        let messages = chunk
            .iter()
            .map(|l| LogMessage {
                task_id: meta.task_id.clone(),
                service_id: meta.service_id.clone(),
                service_name: meta.service_name.clone(),
                slot: meta.slot,
                node_id: meta.node_id.clone(),
                timestamp_ns: l.timestamp_ns,
                stream: l.stream.name().to_string(),
                data: l.data.clone(),
                unavailable_nodes: Vec::new(),
                attrs: Vec::new(),
            })
            .collect();
        tx.send(PublishLogsMessage {
            subscription_id: sub_id.to_string(),
            messages,
            close: false,
            node_id: meta.node_id.clone(),
        })
        .await
        .map_err(|_| ())?;
    }
    Ok(())
}
