//! `syncs-status`: is replication healthy, and how far behind is it?
//!
//! Reads the Prometheus endpoints of a proxy and/or a server and sums them
//! up in a few lines. Healthy means: the proxy has every destination
//! connected, its oldest unacknowledged record is younger than the allowed
//! lag, its spool has not hit its cap; the server's last rules reload was
//! not rejected and no target has been down longer than allowed. The exit
//! code says it (0 healthy, 1 not, 2 unreachable).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use syncs_engine::stats;

/// Samples of one endpoint: metric name → [(labels, value)].
#[derive(Debug, Default)]
pub struct Samples(BTreeMap<String, Vec<(String, f64)>>);

impl Samples {
    /// Parses Prometheus text exposition (comments and blank lines skipped).
    pub fn parse(text: &str) -> Self {
        let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            out.entry(name.to_owned())
                .or_default()
                .push((labels.to_owned(), value));
        }
        Samples(out)
    }

    /// The sum over all label sets of `name` (0 when absent).
    pub fn total(&self, name: &str) -> f64 {
        self.0
            .get(name)
            .map(|v| v.iter().map(|(_, x)| x).sum())
            .unwrap_or(0.0)
    }

    /// The value of `name` with exactly `labels` (as rendered, e.g. `outcome="ok"`).
    pub fn get(&self, name: &str, labels: &str) -> f64 {
        self.0
            .get(name)
            .and_then(|v| v.iter().find(|(l, _)| l == labels).map(|(_, x)| *x))
            .unwrap_or(0.0)
    }

    /// Every label set of `name` with its value.
    pub fn series(&self, name: &str) -> &[(String, f64)] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// `label=value` pairs of `name`, for a breakdown line.
    pub fn breakdown(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(_, x)| *x > 0.0)
                    .map(|(l, x)| format!("{} {x}", l.replace('"', "")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

/// Fetches `/metrics` from `addr` (plain HTTP/1.0, as the exporter serves it).
pub fn fetch(addr: SocketAddr) -> anyhow::Result<Samples> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .with_context(|| format!("reading {addr}/metrics"))?;
    let Some((head, text)) = body.split_once("\r\n\r\n") else {
        bail!("{addr}: not an HTTP answer");
    };
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!(
            "{addr}: {}",
            head.lines().next().unwrap_or("no status line")
        );
    }
    Ok(Samples::parse(text))
}

/// The verdict on one daemon: healthy or not, and the lines to print.
#[derive(Debug)]
pub struct Verdict {
    pub healthy: bool,
    pub lines: Vec<String>,
}

/// Sums up a proxy's samples; `destinations` is how many `-d` it has.
pub fn proxy(m: &Samples, destinations: usize, max_lag: Duration) -> Verdict {
    let up = m.total(stats::PROXY_LINKS_UP) as usize;
    let lag = m.total(stats::PROXY_OLDEST_PENDING_SECONDS);
    let pending = m.total(stats::PROXY_PENDING);
    let full = m.total(stats::PROXY_SPOOL_FULL);
    let mut problems = Vec::new();
    if up < destinations {
        problems.push(format!(
            "{} of {destinations} servers not connected",
            destinations - up
        ));
    }
    if lag > max_lag.as_secs_f64() {
        problems.push(format!(
            "lag {lag:.1}s is above {:.0}s",
            max_lag.as_secs_f64()
        ));
    }
    if full > 0.0 {
        problems.push(format!("the spool hit its cap {full} time(s)"));
    }
    let mut lines = vec![
        format!("  lag: {lag:.1}s (oldest unacknowledged record), {pending} record(s) pending, {} spooled", bytes(m.total(stats::PROXY_SPOOL_BYTES))),
        format!("  servers connected: {up} of {destinations}; connect errors: {}", m.get(stats::PROXY_CONNECTS, "outcome=\"error\"")),
        format!(
            "  frames accepted: {}; refused: {}{}",
            m.total(stats::PROXY_FRAMES_ACCEPTED),
            m.total(stats::PROXY_FRAMES_REFUSED),
            paren(&m.breakdown(stats::PROXY_FRAMES_REFUSED))
        ),
    ];
    lines.extend(problems.iter().map(|p| format!("  problem: {p}")));
    Verdict {
        healthy: problems.is_empty(),
        lines,
    }
}

/// Sums up a server's samples; a target down longer than `max_down` makes
/// it unhealthy.
pub fn server(m: &Samples, max_down: Duration) -> Verdict {
    let rejected = m.get(stats::SERVER_RULES_RELOADS, "outcome=\"rejected\"");
    let ok = m.get(stats::SERVER_RULES_RELOADS, "outcome=\"ok\"");
    let mut lines = vec![
        format!(
            "  applied: {}{}",
            m.total(stats::SERVER_APPLIED),
            paren(&m.breakdown(stats::SERVER_APPLIED))
        ),
        format!(
            "  dead-lettered: {}{}; dropped by rules: {}",
            m.total(stats::SERVER_DEAD_LETTERED),
            paren(&m.breakdown(stats::SERVER_DEAD_LETTERED)),
            m.total(stats::SERVER_DROPPED)
        ),
        format!(
            "  target retries: {}; rules reloads: {ok} ok, {rejected} rejected",
            m.total(stats::SERVER_TARGET_RETRIES)
        ),
    ];
    let mut healthy = true;
    // Per stream and target: up, down, or catching up.
    for (labels, position) in m.series(stats::SERVER_TARGET_POSITION) {
        let down = m.get(stats::SERVER_TARGET_DOWN_SECONDS, labels);
        let behind = m.get(stats::SERVER_TARGET_BEHIND_RECORDS, labels);
        let seconds = m.get(stats::SERVER_TARGET_BEHIND_SECONDS, labels);
        let state = if down > 0.0 {
            format!("down for {down:.0}s")
        } else if behind > 0.0 {
            "catching up".to_owned()
        } else {
            "up".to_owned()
        };
        lines.push(format!(
            "  target {}: {state}; at {position}, {behind} record(s) / {seconds:.1}s behind",
            labels.replace('"', "")
        ));
        if down > max_down.as_secs_f64() {
            healthy = false;
            lines.push(format!(
                "  problem: {} has been down for {down:.0}s (more than {}s); its records wait in the proxy's spool",
                labels.replace('"', ""),
                max_down.as_secs()
            ));
        }
    }
    // The reload counters do not say which came last; any rejection is
    // worth a look, so it is reported but only unhealthy if no reload
    // succeeded after start.
    healthy &= rejected == 0.0 || ok > 0.0;
    if !healthy {
        lines.push("  problem: the rules edit was rejected; the previous rules are live".into());
    } else if rejected > 0.0 {
        lines.push(format!(
            "  note: {rejected} rules reload(s) were rejected since start"
        ));
    }
    Verdict { healthy, lines }
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

fn bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "# TYPE x counter\n\
        syncs_proxy_links_up 1\n\
        syncs_proxy_oldest_pending_seconds 2.5\n\
        syncs_proxy_pending_records 10\n\
        syncs_proxy_frames_refused_total{reason=\"bad_resp\"} 2\n\
        syncs_proxy_frames_accepted_total{kind=\"redis\"} 100\n";

    #[test]
    fn parses_and_judges_a_proxy() {
        let m = Samples::parse(PROXY);
        assert_eq!(m.total(stats::PROXY_FRAMES_REFUSED), 2.0);
        let v = proxy(&m, 1, Duration::from_secs(60));
        assert!(v.healthy, "{:?}", v.lines);
        assert!(v.lines.iter().any(|l| l.contains("lag: 2.5s")));
        let v = proxy(&m, 2, Duration::from_secs(1));
        assert!(!v.healthy);
        assert!(v
            .lines
            .iter()
            .any(|l| l.contains("1 of 2 servers not connected")));
        assert!(v.lines.iter().any(|l| l.contains("lag 2.5s is above 1s")));
    }

    #[test]
    fn a_rejected_reload_without_a_good_one_is_unhealthy() {
        let m = Samples::parse("syncs_server_rules_reloads_total{outcome=\"rejected\"} 1\n");
        assert!(!server(&m, Duration::from_secs(60)).healthy);
        let m = Samples::parse("syncs_server_rules_reloads_total{outcome=\"rejected\"} 1\nsyncs_server_rules_reloads_total{outcome=\"ok\"} 2\n");
        assert!(server(&m, Duration::from_secs(60)).healthy);
    }

    #[test]
    fn a_target_down_too_long_is_unhealthy_and_named() {
        let m = Samples::parse(
            "syncs_server_target_position{source=\"web/01\",target=\"a\"} 90\n\
             syncs_server_target_position{source=\"web/01\",target=\"b\"} 40\n\
             syncs_server_target_behind_records{source=\"web/01\",target=\"b\"} 50\n\
             syncs_server_target_behind_seconds{source=\"web/01\",target=\"b\"} 75\n\
             syncs_server_target_down_seconds{source=\"web/01\",target=\"b\"} 75\n",
        );
        let v = server(&m, Duration::from_secs(60));
        assert!(!v.healthy);
        assert!(
            v.lines
                .iter()
                .any(|l| l.contains("target source=web/01,target=a: up; at 90")),
            "{:?}",
            v.lines
        );
        assert!(
            v.lines
                .iter()
                .any(|l| l.contains("target=b: down for 75s; at 40, 50 record(s) / 75.0s behind")),
            "{:?}",
            v.lines
        );
        assert!(
            v.lines.iter().any(|l| l.contains("has been down for 75s")),
            "{:?}",
            v.lines
        );
        assert!(server(&m, Duration::from_secs(120)).healthy);
    }
}
