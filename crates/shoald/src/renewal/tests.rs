use super::*;

#[test]
fn a_certificate_outliving_a_shortened_expiry_is_renewed_at_once() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let day = Duration::from_secs(86_400);
    // A 90-day certificate after `--cert-expiry 1m`.
    assert!(outlives_expiry(now + 90 * day, now, 60_000));
    // A fresh one-minute certificate (signed a moment ago) does not.
    assert!(!outlives_expiry(now + Duration::from_secs(60), now, 60_000));
    assert!(!outlives_expiry(now + Duration::from_secs(65), now, 60_000));
    // A longer expiry waits for the next renewal.
    assert!(!outlives_expiry(now + day, now, 90 * 86_400_000));
    // Unknown expiry: nothing to compare.
    assert!(!outlives_expiry(now + 90 * day, now, 0));
}
