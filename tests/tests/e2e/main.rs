//! The one end-to-end test binary: one module per area.

mod cron_differential;
