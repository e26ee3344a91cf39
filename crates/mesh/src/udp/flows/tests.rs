use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use super::{Flow, FlowState, FlowTable, TableFull};

const SECOND: u64 = 1_000_000_000;
const IDLE: u64 = 30 * SECOND;

fn client(port: u16) -> SocketAddr {
    (Ipv4Addr::new(192, 0, 2, 1), port).into()
}

fn task_addr(i: u8) -> SocketAddr {
    (Ipv4Addr::new(10, 0, 0, i), 53).into()
}

/// A flow pinned to task `t<i>`; the backend handle is the task's number.
fn flow(i: u8, now: u64) -> Flow<u8> {
    Flow {
        task_id: Arc::from(format!("t{i}")),
        backend_addr: task_addr(i),
        state: Arc::new(FlowState::new(now)),
        backend: i,
    }
}

fn routed(_: &Arc<str>, _: SocketAddr) -> bool {
    true
}

#[test]
fn a_flow_stays_pinned_while_its_task_is_routed() {
    let mut table = FlowTable::new(16, IDLE);
    table.insert(client(1000), flow(1, 0), 0).unwrap();
    for t in 1..10 {
        let f = table.lookup(client(1000), t * SECOND, routed).unwrap();
        assert_eq!(f.backend, 1);
    }
    assert!(table.lookup(client(1001), SECOND, routed).is_none());
}

#[test]
fn each_client_address_and_port_is_its_own_flow() {
    let mut table = FlowTable::new(16, IDLE);
    for (port, task) in [(1000, 1), (1001, 2), (1002, 3)] {
        table.insert(client(port), flow(task, 0), 0).unwrap();
    }
    let other_ip: SocketAddr = (Ipv4Addr::new(192, 0, 2, 2), 1000).into();
    table.insert(other_ip, flow(2, 0), 0).unwrap();
    let tasks: Vec<u8> = [client(1000), client(1001), client(1002), other_ip]
        .into_iter()
        .map(|c| table.lookup(c, 1, routed).unwrap().backend)
        .collect();
    assert_eq!(tasks, [1, 2, 3, 2]);
}

#[test]
fn withdrawn_task_drops_the_pin_on_the_next_datagram() {
    let mut table = FlowTable::new(16, IDLE);
    table.insert(client(1000), flow(1, 0), 0).unwrap();
    let gone = |task: &Arc<str>, _: SocketAddr| &**task != "t1";
    assert!(table.lookup(client(1000), 1, gone).is_none());
    assert_eq!(table.len(), 0);
    table.insert(client(1000), flow(2, 1), 1).unwrap();
    assert_eq!(table.lookup(client(1000), 2, gone).unwrap().backend, 2);
}

#[test]
fn task_moved_to_another_address_drops_the_pin() {
    let mut table = FlowTable::new(16, IDLE);
    table.insert(client(1000), flow(1, 0), 0).unwrap();
    let moved = |_: &Arc<str>, addr: SocketAddr| addr != task_addr(1);
    assert!(table.lookup(client(1000), 1, moved).is_none());
}

#[test]
fn refused_datagram_drops_the_pin() {
    let mut table = FlowTable::new(16, IDLE);
    let f = flow(1, 0);
    let state = f.state.clone();
    table.insert(client(1000), f, 0).unwrap();
    state.refuse();
    assert!(table.lookup(client(1000), 1, routed).is_none());
    assert_eq!(table.len(), 0);
}

#[test]
fn idle_flows_are_forgotten_and_active_ones_kept() {
    let mut table = FlowTable::new(16, IDLE);
    table.insert(client(1), flow(1, 0), 0).unwrap();
    table.insert(client(2), flow(2, 0), 0).unwrap();
    // Client 1 keeps talking; client 2's task answers once, late.
    table.lookup(client(1), 20 * SECOND, routed).unwrap();
    assert_eq!(table.expire(IDLE - 1), 0);
    assert_eq!(table.expire(IDLE), 1);
    assert!(table.lookup(client(2), IDLE, routed).is_none());
    assert_eq!(table.lookup(client(1), IDLE, routed).unwrap().backend, 1);
}

#[test]
fn a_reply_keeps_the_flow_alive() {
    let mut table = FlowTable::new(16, IDLE);
    let f = flow(1, 0);
    let state = f.state.clone();
    table.insert(client(1), f, 0).unwrap();
    state.touch(25 * SECOND);
    assert_eq!(table.expire(40 * SECOND), 0);
    assert_eq!(table.expire(55 * SECOND), 1);
}

#[test]
fn a_full_table_forgets_idle_flows_before_refusing() {
    let mut table = FlowTable::new(2, IDLE);
    table.insert(client(1), flow(1, 0), 0).unwrap();
    table
        .insert(client(2), flow(2, 10 * SECOND), 10 * SECOND)
        .unwrap();
    assert_eq!(
        table.insert(client(3), flow(3, SECOND), SECOND).err(),
        Some(TableFull)
    );
    // At 30 s client 1 is idle for the timeout: it makes room.
    table.insert(client(3), flow(3, IDLE), IDLE).unwrap();
    assert!(table.lookup(client(1), IDLE, routed).is_none());
    assert_eq!(table.len(), 2);
}

proptest! {
    /// Whatever the datagrams, a flow's datagrams reach one task while it is
    /// routed, and never a task that is not.
    #[test]
    fn datagrams_go_to_the_pinned_task_or_a_routed_one(
        events in proptest::collection::vec((0u16..8, 0u8..4, any::<bool>()), 1..200),
    ) {
        let mut table = FlowTable::new(64, IDLE);
        let mut pinned: std::collections::HashMap<u16, u8> = Default::default();
        let mut withdrawn = [false; 4];
        for (now, (c, task, withdraw)) in events.into_iter().enumerate() {
            let now = now as u64;
            if withdraw {
                withdrawn[usize::from(task)] = !withdrawn[usize::from(task)];
            }
            let is_routed = |t: &Arc<str>, _: SocketAddr| {
                let i: usize = t[1..].parse().unwrap();
                !withdrawn[i]
            };
            match table.lookup(client(c), now, is_routed) {
                Some(f) => {
                    prop_assert_eq!(Some(&f.backend), pinned.get(&c));
                    prop_assert!(!withdrawn[usize::from(f.backend)]);
                }
                None if !withdrawn[usize::from(task)] => {
                    table.insert(client(c), flow(task, now), now).unwrap();
                    pinned.insert(c, task);
                }
                None => {
                    pinned.remove(&c);
                }
            }
        }
    }
}
