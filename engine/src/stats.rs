//! Metric names shared by the daemons, so dashboards and tests agree.
//!
//! Values are recorded with the `metrics` facade; the daemons install the
//! Prometheus exporter. Every counter that records a refusal or a failure
//! carries a `reason` label.

/// Client frames accepted by the proxy (label `kind`: redis | mongo).
pub const PROXY_FRAMES_ACCEPTED: &str = "syncs_proxy_frames_accepted_total";
/// Client frames refused by the proxy (label `reason`).
pub const PROXY_FRAMES_REFUSED: &str = "syncs_proxy_frames_refused_total";
/// Records acknowledged by the server.
pub const PROXY_RECORDS_ACKED: &str = "syncs_proxy_records_acked_total";
/// Connections to the server made (label `outcome`: ok | error).
pub const PROXY_CONNECTS: &str = "syncs_proxy_connects_total";
/// Records held by the proxy, not yet acknowledged.
pub const PROXY_PENDING: &str = "syncs_proxy_pending_records";
/// Client connections open.
pub const PROXY_CLIENTS: &str = "syncs_proxy_clients";
/// Destinations with a live session (handshake done).
pub const PROXY_LINKS_UP: &str = "syncs_proxy_links_up";

/// Records received by the server.
pub const SERVER_RECORDS: &str = "syncs_server_records_received_total";
/// Records skipped because they were already applied (redelivery).
pub const SERVER_DUPLICATES: &str = "syncs_server_records_duplicate_total";
/// Records refused as undecodable (label `reason`).
pub const SERVER_BAD_RECORDS: &str = "syncs_server_records_refused_total";
/// Operations applied (labels `target`, `kind`).
pub const SERVER_APPLIED: &str = "syncs_server_ops_applied_total";
/// Operations dropped by a rule or the default (labels `rule`, `reason`).
pub const SERVER_DROPPED: &str = "syncs_server_ops_dropped_total";
/// Operations written to the dead-letter file (labels `target`, `reason`).
pub const SERVER_DEAD_LETTERED: &str = "syncs_server_ops_dead_lettered_total";
/// Retries of a target that was unavailable (label `target`).
pub const SERVER_TARGET_RETRIES: &str = "syncs_server_target_retries_total";
/// Rules reloads (label `outcome`: ok | rejected).
pub const SERVER_RULES_RELOADS: &str = "syncs_server_rules_reloads_total";
