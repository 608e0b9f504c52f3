//! Prometheus metrics of the flow checks, served as text at `/metrics`:
//! run outcomes per check and location, per-step latency histograms, each
//! check's health, certificate days left, alerts sent, and how late the
//! scheduler starts rounds; and the `serve` instances sharing the database
//! with their heartbeats.
use std::time::Duration;

use bankbridge_checks::alerts::AlertKind;
use bankbridge_checks::runner::{RunReport, StepOutcome};
use bankbridge_checks::schedule::Health;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    check: String,
    location: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    check: String,
    location: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    port: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    channel: String,
    kind: String,
    delivered: String,
}

fn step_histogram() -> Histogram {
    // 5 ms to ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_seconds: Family<RunLabels, Histogram, fn() -> Histogram>,
    steps: Family<StepLabels, Histogram, fn() -> Histogram>,
    health: Family<CheckLabels, Gauge>,
    certificate_days: Family<HostLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
    lateness: Histogram,
    instance_up: Family<InstanceLabels, Gauge>,
    instance_heartbeat: Family<InstanceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("bankbridge");
        let instance_up = Family::<InstanceLabels, Gauge>::default();
        root.register(
            "instance_up",
            "1 while a serve instance sharing this database beats, 0 once it stopped or went silent",
            instance_up.clone(),
        );
        let instance_heartbeat = Family::<InstanceLabels, Gauge>::default();
        root.register(
            "instance_heartbeat_timestamp_seconds",
            "When a serve instance sharing this database last beat (Unix time)",
            instance_heartbeat.clone(),
        );
        let registry = root.sub_registry_with_prefix("check");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs of a flow at a location, by outcome",
            runs.clone(),
        );
        let run_seconds =
            Family::<RunLabels, Histogram, fn() -> Histogram>::new_with_constructor(step_histogram);
        registry.register(
            "run_duration_seconds",
            "Duration of whole runs (all attempts)",
            run_seconds.clone(),
        );
        let steps = Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            step_histogram,
        );
        registry.register(
            "step_duration_seconds",
            "Duration of each step that ran (request sent to answer read)",
            steps.clone(),
        );
        let health = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "health",
            "Health of a check: 0 passing, 1 degraded, 2 failing",
            health.clone(),
        );
        let certificate_days = Family::<HostLabels, Gauge>::default();
        registry.register(
            "certificate_days_left",
            "Days until the TLS certificate of a host a flow calls expires",
            certificate_days.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts sent, by channel and kind", alerts.clone());
        let lateness = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "scheduler_lateness_seconds",
            "How late rounds start after their scheduled time",
            lateness.clone(),
        );
        Self {
            registry: root,
            runs,
            run_seconds,
            steps,
            health,
            certificate_days,
            alerts,
            lateness,
            instance_up,
            instance_heartbeat,
        }
    }

    /// The instances as the store lists them at `now`.
    pub fn set_instances(
        &self,
        instances: &[bankbridge_store::Instance],
        now: chrono::DateTime<chrono::Utc>,
    ) {
        for i in instances {
            let labels = InstanceLabels {
                instance: i.name.clone(),
            };
            self.instance_up
                .get_or_create(&labels)
                .set(i64::from(i.alive(now)));
            self.instance_heartbeat
                .get_or_create(&labels)
                .set(i.heartbeat_at.timestamp());
        }
    }

    pub fn observe_run(&self, report: &RunReport) {
        let labels = RunLabels {
            check: report.flow_id.clone(),
            location: report.location.clone(),
            outcome: report.outcome.as_str().into(),
        };
        self.runs.get_or_create(&labels).inc();
        self.run_seconds
            .get_or_create(&labels)
            .observe(report.duration_ms as f64 / 1000.0);
        for s in &report.steps {
            if s.outcome == StepOutcome::Skipped {
                continue;
            }
            self.steps
                .get_or_create(&StepLabels {
                    check: report.flow_id.clone(),
                    location: report.location.clone(),
                    step: s.name.clone(),
                })
                .observe(s.duration_ms as f64 / 1000.0);
        }
    }

    pub fn set_health(&self, check: &str, health: Health) {
        let value = match health {
            Health::Passing => 0,
            Health::Degraded => 1,
            Health::Failing => 2,
        };
        self.health
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(value);
    }

    pub fn set_certificate(&self, host: &str, port: u16, days_left: i64) {
        self.certificate_days
            .get_or_create(&HostLabels {
                host: host.to_string(),
                port,
            })
            .set(days_left);
    }

    pub fn alert_sent(&self, channel: &str, kind: AlertKind, delivered: bool) {
        let kind = match kind {
            AlertKind::Failure => "failure",
            AlertKind::Degraded => "degraded",
            AlertKind::Recovery => "recovery",
            AlertKind::CertificateExpiry => "certificate_expiry",
            AlertKind::ConsentExpiry => "consent_expiry",
        };
        self.alerts
            .get_or_create(&AlertLabels {
                channel: channel.to_string(),
                kind: kind.into(),
                delivered: delivered.to_string(),
            })
            .inc();
    }

    pub fn observe_lateness(&self, late: Duration) {
        self.lateness.observe(late.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
