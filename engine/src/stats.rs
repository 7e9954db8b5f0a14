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
/// Client connections waiting for their share of `--frame-budget` (a large
/// frame's length arrived, other clients' large frames hold the budget):
/// not read from meanwhile.
pub const PROXY_FRAME_BUDGET_WAITING: &str = "syncs_proxy_frame_budget_waiting";
/// Pipes clients offered with their first bytes (label `outcome`: taken |
/// refused); a taken one carries the client's frames after its SWITCH.
pub const PROXY_CLIENT_PIPES: &str = "syncs_proxy_client_pipes_total";
/// Destinations with a live session (handshake done).
pub const PROXY_LINKS_UP: &str = "syncs_proxy_links_up";
/// REWINDs a server sent: records sent again for a target that lagged.
pub const PROXY_REWINDS: &str = "syncs_proxy_rewinds_total";
/// BATCH messages sent to servers (counter): records per batch is
/// `syncs_proxy_spool_read_records_total` over it.
pub const PROXY_BATCHES_SENT: &str = "syncs_proxy_batches_sent_total";

/// Bytes of all the spool's segment files (gauge).
pub const PROXY_SPOOL_BYTES: &str = "syncs_proxy_spool_bytes";
/// Age of the oldest spooled record not acknowledged by every destination
/// (gauge).
pub const PROXY_OLDEST_PENDING_SECONDS: &str = "syncs_proxy_oldest_pending_seconds";
/// Pushes that found the spool at its disk cap (counter, label `policy`:
/// block | refuse).
pub const PROXY_SPOOL_FULL: &str = "syncs_proxy_spool_full_total";
/// Fsync calls made by the spool (counter).
pub const PROXY_SPOOL_FSYNCS: &str = "syncs_proxy_spool_fsyncs_total";
/// Records the spool handed to senders (counter, label `from`: memory, or
/// disk when a sender fell behind what the spool keeps in memory).
pub const PROXY_SPOOL_READ_RECORDS: &str = "syncs_proxy_spool_read_records_total";

/// Records received by the server.
pub const SERVER_RECORDS: &str = "syncs_server_records_received_total";
/// Records skipped because they were already applied (redelivery).
pub const SERVER_DUPLICATES: &str = "syncs_server_records_duplicate_total";
/// Records refused as undecodable (label `reason`).
pub const SERVER_BAD_RECORDS: &str = "syncs_server_records_refused_total";
/// Per stream (`source`) and target: the sequence up to which the target
/// is done (applied, dead-lettered, or not its business).
pub const SERVER_TARGET_POSITION: &str = "syncs_server_target_position";
/// Per stream and target: records received that the target is not done with.
pub const SERVER_TARGET_BEHIND_RECORDS: &str = "syncs_server_target_behind_records";
/// Per stream and target: age of the oldest record the target is not done with.
pub const SERVER_TARGET_BEHIND_SECONDS: &str = "syncs_server_target_behind_seconds";
/// Per stream and target: how long the target has been failing (0: it is not).
pub const SERVER_TARGET_DOWN_SECONDS: &str = "syncs_server_target_down_seconds";
/// Per stream and target: bytes of records held in memory for it.
pub const SERVER_TARGET_BACKLOG_BYTES: &str = "syncs_server_target_backlog_bytes";
/// Records a lagging target's backlog did not keep (asked again later), per
/// target; a record counts again each time it is not kept.
pub const SERVER_TARGET_SPILLED: &str = "syncs_server_target_spilled_records_total";
/// REWINDs sent to proxies (or sessions closed for a version 2 proxy).
pub const SERVER_REWINDS: &str = "syncs_server_rewinds_total";
/// Proxy connections that ended in a read error (reset, cut) mid-session.
pub const SERVER_CONNECTION_ERRORS: &str = "syncs_server_connection_errors_total";
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
/// Operations sent to a target by a rule (labels `rule` — `default` when
/// no rule matched — and `target`).
pub const SERVER_ROUTED: &str = "syncs_server_ops_routed_total";

/// Records a Redis target skipped because it had applied them already
/// (label `target`).
pub const SERVER_REDIS_ALREADY_APPLIED: &str = "syncs_server_redis_already_applied_total";
/// Redis targets that refused an `MSET` of merged `SET`s while queueing
/// and send plain `SET`s one by one since (label `target`; at most 1 per
/// target and process).
pub const SERVER_REDIS_MSET_REFUSED: &str = "syncs_server_redis_mset_refused_total";
/// Redis runs planned again because another server moved the marker hash
/// under WATCH (shared streams only; label `target`).
pub const SERVER_REDIS_MARKER_CONFLICTS: &str = "syncs_server_redis_marker_conflicts_total";
/// Redis connections dropped with a request in flight that the next
/// connection killed before going on (labels `target`, `outcome`: `killed`,
/// `gone` — closed already, or its server restarted —, `refused`,
/// `unreachable` — the master changed and the old one could not be reached).
pub const SERVER_REDIS_FENCES: &str = "syncs_server_redis_fences_total";
/// Redis runs whose WAIT found fewer replicas than the target's `replicas`
/// within `replica_timeout` (label `target`): committed on the master, not
/// yet safe from a failover, so held and retried.
pub const SERVER_REDIS_WAIT_SHORTFALLS: &str = "syncs_server_redis_wait_shortfalls_total";
/// Mongo inserts that met a document already there (label `target`).
pub const SERVER_MONGO_DUPLICATE_KEYS: &str = "syncs_server_mongo_duplicate_keys_total";

// Redis Cluster targets.

/// Redirects a cluster target followed (labels `target`, `node` — the node
/// that redirected —, `kind`: `moved` | `ask`).
pub const SERVER_REDIS_REDIRECTS: &str = "syncs_server_redis_redirects_total";
/// Slot groups a node answered `TRYAGAIN` (their keys split by a slot
/// migration), sent again after a pause (labels `target`, `node`).
pub const SERVER_REDIS_TRYAGAIN: &str = "syncs_server_redis_tryagain_total";
/// Markers read lower than a value this server had confirmed (a replica
/// without the last writes was promoted; label `target`). The records in
/// between are missing at the target; each case is logged with its range.
pub const SERVER_REDIS_MARKER_REGRESSIONS: &str = "syncs_server_redis_marker_regressions_total";
/// Operations a cluster target applied, per node (labels `target`, `node`).
pub const SERVER_REDIS_CLUSTER_APPLIED: &str = "syncs_server_redis_cluster_applied_total";
/// Slot map fetches with `CLUSTER SLOTS` (labels `target`, `outcome`: ok |
/// error).
pub const SERVER_REDIS_TOPOLOGY_REFRESHES: &str = "syncs_server_redis_topology_refreshes_total";

// The NATS JetStream transport (server side).

/// Gauge: partitions this server consumes now.
pub const SERVER_NATS_PARTITIONS_HELD: &str = "syncs_server_nats_partitions_held";
/// Counter: partition leases taken (label `outcome`: taken | lost | released).
pub const SERVER_NATS_LEASES: &str = "syncs_server_nats_leases_total";
/// Counter: records skipped after waiting `gap_timeout` for them.
pub const SERVER_NATS_GAPS: &str = "syncs_server_nats_gap_records_total";
/// Gauge, per partition and target: records in the stream that target's
/// consumer has not acknowledged yet (not delivered, or delivered and not
/// yet applied).
pub const SERVER_NATS_PENDING: &str = "syncs_server_nats_pending_records";

/// Histogram: seconds from a batch's arrival to every record in it being
/// applied, dead-lettered or dropped (what the ACK waits for).
pub const SERVER_BATCH_SECONDS: &str = "syncs_server_batch_duration_seconds";
/// Histogram: seconds one target took to apply its share of a batch,
/// retries included (label `target`).
pub const SERVER_APPLY_SECONDS: &str = "syncs_server_apply_duration_seconds";
/// Histogram: seconds from the proxy accepting a record to every
/// destination acknowledging it (end-to-end replication latency, as the
/// proxy sees it). Observed for records still in the spool's memory
/// window; `syncs_proxy_oldest_pending_seconds` covers a backlog on disk.
pub const PROXY_REPLICATION_SECONDS: &str = "syncs_proxy_replication_latency_seconds";

/// Buckets (seconds) of every latency histogram: 100 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Proxies refused before their session started (label `reason`: `tls` —
/// a failed TLS handshake —, `no_client_cert`, `bad_client_cert`,
/// `plaintext` — a plaintext proxy on a TLS server —, `unexpected_tls` —
/// a TLS proxy on a plaintext server —, `no_token`, `bad_token`, `timeout`).
pub const SERVER_AUTH_FAILURES: &str = "syncs_server_auth_failures_total";
/// Proxy connections closed at once because `max_connections` were open
/// (label `reason`: `max_connections`).
pub const SERVER_CONNECTIONS_REFUSED: &str = "syncs_server_connections_refused_total";
/// Client connections closed at once because `--max-clients` were open
/// (label `reason`: `max_clients`).
pub const PROXY_CLIENTS_REFUSED: &str = "syncs_proxy_clients_refused_total";
