//! Placement: constraints, spread preferences, per-node caps and resource
//! reservations (being written).

use shoal_api::pb::ServiceSpec;

/// Checks the placement part of a spec.
pub fn validate(_spec: &ServiceSpec) -> Result<(), String> {
    Ok(())
}
