//! Restart and update policies: `--restart-condition`, the failure
//! actions, the update order and the failure ratio.

use shoal_api::pb::{FailureAction, RestartCondition, UpdateOrder};

use super::invalid;

/// `--restart-condition any|on-failure|none`.
pub fn parse_restart_condition(value: &str) -> anyhow::Result<RestartCondition> {
    match value {
        "any" => Ok(RestartCondition::Any),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "none" => Ok(RestartCondition::None),
        _ => Err(invalid(
            value,
            "--restart-condition",
            "must be any, on-failure or none",
        )),
    }
}

/// `--update-failure-action pause|continue|rollback`, or for
/// `--rollback-failure-action` (`allow_rollback` false) `pause|continue`.
pub fn parse_failure_action(
    value: &str,
    flag: &str,
    allow_rollback: bool,
) -> anyhow::Result<FailureAction> {
    match value {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" if allow_rollback => Ok(FailureAction::Rollback),
        _ if allow_rollback => Err(invalid(value, flag, "must be pause, continue or rollback")),
        _ => Err(invalid(value, flag, "must be pause or continue")),
    }
}

/// `--update-order` / `--rollback-order`: `stop-first|start-first`.
pub fn parse_update_order(value: &str, flag: &str) -> anyhow::Result<UpdateOrder> {
    match value {
        "stop-first" => Ok(UpdateOrder::StopFirst),
        "start-first" => Ok(UpdateOrder::StartFirst),
        _ => Err(invalid(value, flag, "must be stop-first or start-first")),
    }
}

/// `--update-max-failure-ratio` / `--rollback-max-failure-ratio`: a fraction in 0..=1.
pub fn parse_failure_ratio(value: &str, flag: &str) -> anyhow::Result<f32> {
    let ratio: f32 = value
        .trim()
        .parse()
        .map_err(|_| invalid(value, flag, "must be a number between 0 and 1"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid(value, flag, "must be between 0 and 1"));
    }
    Ok(ratio)
}
