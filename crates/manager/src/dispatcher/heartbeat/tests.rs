use super::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn three_periods_of_silence() {
    let t0 = Instant::now();
    let hb = HeartbeatPeriod::new(5 * S, t0);
    assert_eq!(hb.current(), 5 * S);
    assert_eq!(hb.limit(t0), 15 * S);
    assert_eq!(hb.limit(t0 + 100 * S), 15 * S);
}

#[test]
fn a_shorter_period_counts_once_nodes_can_know_it() {
    let t0 = Instant::now();
    let mut hb = HeartbeatPeriod::new(5 * S, t0);
    let t1 = t0 + 60 * S;
    hb.observe(S / 2, t1);
    assert_eq!(hb.current(), S / 2);
    // A node that beat just before the change may be silent for 5 s more,
    // and then some at the new period.
    assert_eq!(hb.limit(t1), 5 * S + S * 3 / 2);
    assert_eq!(hb.limit(t1 + 6 * S), 5 * S + S * 3 / 2);
    assert_eq!(hb.limit(t1 + 7 * S), S * 3 / 2);
}

#[test]
fn a_longer_period_counts_at_once() {
    let t0 = Instant::now();
    let mut hb = HeartbeatPeriod::new(S / 2, t0);
    hb.observe(10 * S, t0 + S);
    assert!(hb.limit(t0 + S) >= 30 * S);
    assert_eq!(hb.limit(t0 + 100 * S), 30 * S);
}

#[test]
fn zero_or_unchanged_keeps_the_period() {
    let t0 = Instant::now();
    let mut hb = HeartbeatPeriod::new(5 * S, t0);
    hb.observe(Duration::ZERO, t0 + S);
    hb.observe(5 * S, t0 + 2 * S);
    assert_eq!(hb.current(), 5 * S);
    assert_eq!(hb.limit(t0 + 60 * S), 15 * S);
}
