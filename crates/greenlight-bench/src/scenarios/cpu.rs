//! Where the CPU went during a run: each replica, PostgreSQL and the bench, read from /proc.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::instance::Instance;
use crate::db::Location;
use crate::procs;

/// Where the CPU went during one run: each replica, PostgreSQL (the backends serving the
/// instance's database, and all its other processes), and this process (load generator and
/// sandbox). Read from /proc before and after.
pub(crate) struct CpuSplit {
    wall: Duration,
    pub(super) replicas: Vec<Duration>,
    pub(super) pg_ours: Duration,
    pg_others: Duration,
    pub(super) bench: Duration,
}

pub(super) struct CpuMark {
    at: Instant,
    replicas: Vec<Duration>,
    pg: (Duration, Duration),
    bench: Duration,
}

impl CpuMark {
    pub(super) fn now(gl: &Instance) -> Self {
        let pg = match &gl.location {
            Location::Postgres(db) => procs::postgres_cpu(&db.name),
            Location::Sqlite(_) => (Duration::ZERO, Duration::ZERO),
        };
        CpuMark {
            at: Instant::now(),
            replicas: gl
                .servers
                .iter()
                .map(|s| s.cpu().unwrap_or_default())
                .collect(),
            pg,
            bench: procs::own_cpu().unwrap_or_default(),
        }
    }

    pub(super) fn until(&self, later: &CpuMark) -> CpuSplit {
        CpuSplit {
            wall: later.at.duration_since(self.at),
            replicas: later
                .replicas
                .iter()
                .zip(&self.replicas)
                .map(|(b, a)| b.saturating_sub(*a))
                .collect(),
            pg_ours: later.pg.0.saturating_sub(self.pg.0),
            pg_others: later.pg.1.saturating_sub(self.pg.1),
            bench: later.bench.saturating_sub(self.bench),
        }
    }
}

impl CpuSplit {
    fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "wall_s": self.wall.as_secs_f64(),
            "greenlight_cores": self.replicas.iter().map(|d| self.cores(*d)).collect::<Vec<_>>(),
            "postgres_backends_cores": self.cores(self.pg_ours),
            "postgres_other_cores": self.cores(self.pg_others),
            "bench_cores": self.cores(self.bench),
        })
    }

    pub(super) fn describe(&self) -> String {
        let each: Vec<String> = self
            .replicas
            .iter()
            .map(|d| format!("{:.2}", self.cores(*d)))
            .collect();
        format!(
            "greenlight {:.2} cores ({}), PostgreSQL backends of its database {:.2}, other PostgreSQL processes {:.2}, \
             the bench (load generator and sandbox) {:.2}, over {:.1} s",
            self.cores(self.replicas.iter().sum()),
            each.join(" + "),
            self.cores(self.pg_ours),
            self.cores(self.pg_others),
            self.cores(self.bench),
            self.wall.as_secs_f64()
        )
    }
}
